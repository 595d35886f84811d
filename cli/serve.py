"""`transgan serve MODEL`: an HTTP service with dynamic batching and a demo page (the optional extra `serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transgan.errors import TransganError


def serve_command(
    model: Annotated[str, typer.Argument(help="model file, run directory, pretrained name or exported .onnx")],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port)")] = 8000,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    engine: Annotated[str, typer.Option(help="auto, torch, onnx or tensorrt (auto: onnx for .onnx files)")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (torch autocast; onnx: the file's own)")] = "fp32",
    direction: Annotated[str | None, typer.Option(help="AtoB or BtoA for two-way models (default AtoB)")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="most images per engine call (1: no batching)")] = 8,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="how long the first request of a batch waits for others to join")
    ] = 10.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="largest request body; larger ones get 413")] = 20.0,
    max_side: Annotated[int, typer.Option(min=1, help="largest image width or height; larger ones get 422")] = 2048,
    max_samples: Annotated[int, typer.Option(min=1, help="most images one /generate request may ask for")] = 64,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: warning, info, debug")] = "info",
    tile: Annotated[
        int | None, typer.Option(help="translate in tiles of N pixels, equal to whole images (torch engine)")
    ] = None,
    max_memory: Annotated[
        str | None, typer.Option(help="e.g. 2GB: uploads whose activations would not fit run in tiles (torch)")
    ] = None,
) -> None:
    """Serve MODEL over HTTP: POST /translate or /generate, GET /info and /health, a demo page at /.

    Concurrent requests are grouped into one engine call (up to --max-batch images within --max-wait-ms);
    Ctrl-C or SIGTERM stops taking requests and finishes those in flight.
    """
    try:
        import python_multipart  # noqa: F401  (Starlette parses multipart uploads with it)
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        missing = error.name or "a package"
        raise TransganError(f"serve needs its extra ({missing} is missing): pip install 'transgan[serve]'") from error
    from transgan.inference.tiles import open_translator
    from transgan.serve.app import create_app
    from transgan.serve.model import Limits, ServedModel

    options = {"engine": engine, "device": device, "precision": precision, "direction": direction}
    runner = open_translator(model, tile, max_memory, **options)
    if runner.info.get("kind") not in ("translator", "sampler"):
        raise TransganError(f"{model}: a {runner.info.get('kind')} cannot be served; serve a generator")
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_side=max_side, max_samples=max_samples)
    # Only the model's own name is shown to clients: never a path on this machine.
    served = ServedModel(runner, Path(model).name, limits)
    app = create_app(served, max_batch=max_batch, max_wait_ms=max_wait_ms)
    shown = f"[{host}]" if ":" in host else host
    batching = f"batches of up to {max_batch} within {max_wait_ms:g} ms"
    typer.echo(f"serving {served.name} ({runner.info.get('kind')}, {runner.describe()}; {batching})")
    typer.echo(f"on http://{shown}:{port}/ (demo page), POST /translate or /generate, GET /info, /health")
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30, server_header=False
    )
    uvicorn.Server(config).run()


def register(app: typer.Typer) -> None:
    """Add `serve` to the root app."""
    app.command("serve")(serve_command)

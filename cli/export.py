"""`transgan export MODEL OUT.onnx`: ONNX export with dynamic shapes, metadata, optional fp16, parity check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transgan.errors import TransganError


def parse_size(text: str, option: str) -> tuple[int, int]:
    """'256x512' -> (256, 512); a single number means a square."""
    parts = text.lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise TransganError(f"{option} {text}: write height x width, like 256x256")
    return values[0], values[1]


def export_command(
    model: Annotated[str, typer.Argument(help="model file, run directory or pretrained name")],
    out: Annotated[Path, typer.Argument(help="the .onnx file to write")],
    fp16: Annotated[
        bool, typer.Option("--fp16", help="fp16 weights and convs; norms and reductions stay fp32")
    ] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or newer; --int8 too)")] = 18,
    static_shape: Annotated[
        str | None, typer.Option("--static-shape", help="fix height x width (e.g. 256x256) instead of dynamic")
    ] = None,
    batch: Annotated[int | None, typer.Option(help="fix the batch size instead of dynamic")] = None,
    direction: Annotated[str | None, typer.Option(help="AtoB or BtoA for two-way models (default AtoB)")] = None,
    for_cpu: Annotated[
        bool | None,
        typer.Option(
            "--for-cpu/--for-gpu",
            help="--for-cpu: convs rewritten for CPU runtimes (Winograd 3x3), the graph --engine auto runs on a CPU; "
            "--for-gpu: the plain graph for GPU runtimes. Default: --for-cpu unless this machine has a CUDA device "
            "or --fp16 is given",
            show_default=False,
        ),
    ] = None,
    eval_mode: Annotated[
        bool,
        typer.Option("--eval", help="batch norm with running statistics (pix2pix default: each image's own)"),
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="CPU int8 (ONNX Runtime QDQ): layers chosen by measured error; --calibrate")
    ] = False,
    calibrate: Annotated[Path | None, typer.Option(help="--int8: folder of real images to calibrate on")] = None,
    min_psnr: Annotated[
        float | None, typer.Option(help="--int8: refuse below this PSNR (dB) against fp32 (default 35)")
    ] = None,
    calibrate_size: Annotated[int, typer.Option(min=1, help="--int8: calibration images' size (square crop)")] = 256,
) -> None:
    """Export a generator to ONNX and check ONNX Runtime against PyTorch on a sample input.

    A pix2pix model exports its reference test-time mode: batch norm normalises each image by its own
    statistics. Test-time dropout is not exported: the graph runs without it.
    """
    from transgan.export.options import check_min_psnr

    if out.suffix.lower() != ".onnx":
        raise TransganError(f"{out}: the output file must end in .onnx")
    shape = parse_size(static_shape, "--static-shape") if static_shape else None
    if not int8 and min_psnr is not None:
        raise TransganError("--min-psnr goes with --int8 (the bound an int8 graph must keep against fp32)")
    min_psnr = check_min_psnr(min_psnr)  # checked before the slow export
    if int8 or calibrate is not None:
        if not int8 or calibrate is None:
            raise TransganError("--int8 and --calibrate DIR go together: int8 needs real images to calibrate on")
        if fp16 or for_cpu is not None or shape or batch:
            raise TransganError(
                "--int8 writes a dynamic CPU graph: drop --fp16, --for-cpu/--for-gpu, --static-shape, --batch"
            )
        from transgan.export.int8 import export_int8

        test_time = "eval" if eval_mode else None
        options = {"direction": direction, "min_psnr": min_psnr, "size": calibrate_size, "test_time": test_time}
        say = lambda line: typer.echo(line, err=True)  # noqa: E731
        result = export_int8(model, out, calibrate, on_progress=say, opset=opset, **options)
        typer.echo(result.summary())
        return
    if for_cpu is None:  # the graph for this machine: CPU rewrites unless a GPU runtime will run it
        import torch

        for_cpu = not fp16 and not torch.cuda.is_available()
    from transgan.export.onnx import export_onnx

    report = export_onnx(
        model,
        out,
        direction=direction,
        fp16=fp16,
        opset=opset,
        static_shape=shape,
        batch=batch,
        for_cpu=for_cpu,
        test_time="eval" if eval_mode else None,
    )
    typer.echo(report.summary())


def register(app: typer.Typer) -> None:
    """Add `export` to the root app."""
    app.command("export")(export_command)

"""`transgan bench MODEL`: latency p50/p99, images/s and peak memory per engine, batch size and precision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from transgan.cli.export import parse_size


def bench_command(
    model: Annotated[str, typer.Argument(help="model file, run directory, pretrained name or exported .onnx")],
    engine: Annotated[
        list[str] | None,
        typer.Option(help="auto, torch, compiled, onnx or tensorrt; repeat to compare (default: auto)"),
    ] = None,
    batch_size: Annotated[list[int] | None, typer.Option(min=1, help="repeat to compare (default: 1)")] = None,
    size: Annotated[str, typer.Option(help="input height x width for translators")] = "256x256",
    precision: Annotated[
        list[str] | None, typer.Option(help="fp32, fp16 or bf16; repeat to compare (default: fp32)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    direction: Annotated[str | None, typer.Option(help="AtoB or BtoA (default AtoB)")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="timed runs per configuration (at least)")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs first")] = 2,
    compile: Annotated[
        bool, typer.Option("--compile", help="--engine torch only: torch.compile the network (else --engine compiled)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (one list) instead of a table")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="--engine onnx on CPU: the int8 graph (export --int8)")] = False,
    calibrate: Annotated[Path | None, typer.Option(help="--int8 on a model file: images to calibrate on")] = None,
    min_psnr: Annotated[
        float | None, typer.Option(help="--int8: lowest PSNR (dB) against fp32 accepted (default 35)")
    ] = None,
) -> None:
    """Time a generator under each combination of --engine, --precision and --batch-size."""
    from transgan.errors import TransganError
    from transgan.export.options import check_min_psnr
    from transgan.inference.bench import benchmark
    from transgan.inference.engines import open_engine

    height, width = parse_size(size, "--size")
    if not int8 and (calibrate is not None or min_psnr is not None):
        raise TransganError("--calibrate and --min-psnr go with --int8 (they set up the int8 graph)")
    min_psnr = check_min_psnr(min_psnr)
    engines = engine or ["auto"]
    is_onnx = Path(model).suffix.lower() == ".onnx"
    others = [name for name in engines if name != "torch" and not (name == "auto" and not is_onnx)]
    if compile and others:  # checked before any engine runs: a later refusal would waste the earlier timings
        raise TransganError(
            f"--compile goes with --engine torch, not {others[0]}{' (an .onnx file)' if is_onnx else ''}; "
            "for torch.compile compared with the others use --engine compiled"
        )
    results = []
    for engine_name in engines:
        for precision_name in precision or ["fp32"]:
            options = {"compile": compile, "int8": int8, "calibrate": calibrate, "min_psnr": min_psnr}
            options.update(engine=engine_name, device=device, precision=precision_name, direction=direction)
            runner = open_engine(model, **options)
            for batch in batch_size or [1]:
                results.append(benchmark(runner, batch, (height, width), warmup=warmup, iterations=iterations))
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    table = Table(title=f"transgan bench {model}")
    for column in ("engine", "batch", "size", "p50 ms", "p99 ms", "images/s", "host peak MiB", "device peak MiB"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for row in results:
        device_peak = row["device_peak_mib"]
        table.add_row(
            row["engine"],
            str(row["batch_size"]),
            row["size"] or "-",
            f"{row['latency_p50_ms']:.2f}",
            f"{row['latency_p99_ms']:.2f}",
            f"{row['images_per_s']:.2f}",
            f"{row['host_peak_mib']:.0f}",
            "-" if device_peak is None else f"{device_peak:.0f}",
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add `bench` to the root app."""
    app.command("bench")(bench_command)

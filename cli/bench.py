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
    compile: Annotated[bool, typer.Option("--compile", help="torch engine: torch.compile the network")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (one list) instead of a table")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="--engine onnx on CPU: the int8 graph (export --int8)")] = False,
    calibrate: Annotated[Path | None, typer.Option(help="--int8 on a model file: images to calibrate on")] = None,
    min_psnr: Annotated[float, typer.Option(help="--int8: lowest PSNR (dB) against fp32 accepted")] = 35.0,
) -> None:
    """Time a generator under each combination of --engine, --precision and --batch-size."""
    from transgan.inference.bench import benchmark
    from transgan.inference.engines import open_engine

    height, width = parse_size(size, "--size")
    results = []
    for engine_name in engine or ["auto"]:
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

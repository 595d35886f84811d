"""`transgan translate MODEL INPUT_DIR OUTPUT_DIR`: translate a folder of images, keeping relative paths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class ImagesPerSecond(ProgressColumn):
    """Images per second since the start (rich's own speed column smooths over a short window only)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        speed = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{speed:.1f} img/s")


def translate_command(
    model: Annotated[str, typer.Argument(help="model file, run directory, pretrained name or exported .onnx")],
    input_dir: Annotated[Path, typer.Argument(help="folder of images (searched recursively)")],
    output_dir: Annotated[Path, typer.Argument(help="where to write; must be outside INPUT_DIR")],
    direction: Annotated[str | None, typer.Option(help="AtoB or BtoA (default AtoB)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    engine: Annotated[str, typer.Option(help="auto, torch, onnx or tensorrt (auto: onnx for .onnx files)")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (torch autocast; onnx: the file's own)")] = "fp32",
    resize: Annotated[int | None, typer.Option(help="scale each image so its shorter side is N pixels first")] = None,
    png: Annotated[
        bool, typer.Option("--png", help="write every output as .png (default: the input's format)")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace outputs that already exist")] = False,
    workers: Annotated[int, typer.Option(min=1, help="decode and encode threads each")] = 2,
) -> None:
    """Translate every image in INPUT_DIR; outputs that exist are skipped, so an interrupted run resumes."""
    from transgan.inference.engines import open_engine
    from transgan.inference.pipeline import check_folders, translate_folder

    check_folders(input_dir, output_dir)  # before opening the model, which may mean a slow ONNX export
    console = Console(stderr=True, highlight=False)
    runner = open_engine(model, engine=engine, device=device, precision=precision, direction=direction)
    console.print(f"translating with {runner.describe()}", markup=False)
    columns = [TextColumn("translate"), BarColumn(), MofNCompleteColumn(), ImagesPerSecond(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("translate", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = translate_folder(
            runner,
            input_dir,
            output_dir,
            batch_size=batch_size,
            resize=resize,
            overwrite=overwrite,
            png=png,
            workers=workers,
            on_progress=on_progress,
            on_warning=lambda line: console.print(f"warning: {line}", markup=False, soft_wrap=True),
        )
    console.print(
        f"{summary.translated} translated ({summary.images_per_second:.1f} images/s), "
        f"{summary.skipped_existing} skipped (output exists; --overwrite to redo), "
        f"{len(summary.unreadable)} unreadable",
        markup=False,
        soft_wrap=True,
    )
    for path, reason in summary.unreadable:
        console.print(f"  unreadable: {path}: {reason}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `translate` to the root app."""
    app.command("translate")(translate_command)

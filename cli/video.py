"""The video part of `transgan translate`: one clip (INPUT is a video file) or the videos of a folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

EXIT_INPUTS_FAILED = 1  # as for images: the others are written
EXIT_INTERRUPTED = 130  # Ctrl-C: finished videos are kept, the one in progress leaves no partial file


class FramesPerSecond(ProgressColumn):
    """Frames per second since the clip started."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed if elapsed > 0 else 0.0:.1f} frames/s")


def is_clip(path: Path) -> bool:
    """True when INPUT is one video file (not a folder)."""
    from transgan.inference.video import is_video_file

    return path.is_file() and is_video_file(path)


def _progress(console: Console) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), FramesPerSecond()]
    return Progress(*columns, TimeRemainingColumn(), console=console, transient=False)


def _report(console: Console, summary) -> None:
    console.print(
        f"{summary.target}: {summary.frames} frames at {summary.fps:.3g} fps, {summary.size[0]}x{summary.size[1]} "
        f"({summary.frames_per_second:.1f} frames/s), audio {summary.audio}",
        markup=False,
        soft_wrap=True,
    )


def translate_clip(model: str, source: Path, target: Path, *, crf: int, overwrite: bool, **options) -> None:
    """`transgan translate MODEL clip.mp4 out.mp4` (or OUT_DIR/): one video, frames batched through the engine."""
    from transgan.inference.tiles import open_translator
    from transgan.inference.video import UnreadableVideo, output_path, translate_video

    console = Console(stderr=True, highlight=False)
    target = output_path(source, target)  # checked before the model opens (an ONNX export can be slow)
    if target.exists() and not overwrite:
        console.print(f"{target} exists; --overwrite to redo it", markup=False, soft_wrap=True)
        return
    batch_size, resize = options.pop("batch_size"), options.pop("resize")
    runner = open_translator(model, options.pop("tile", None), options.pop("max_memory", None), **options)
    console.print(f"translating {source} with {runner.describe()}", markup=False, soft_wrap=True)
    with _progress(console) as progress:
        task = progress.add_task(source.name, total=None)
        try:
            summary = translate_video(
                runner,
                source,
                target,
                batch_size=batch_size,
                crf=crf,
                resize=resize,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except UnreadableVideo as error:
            progress.stop()
            console.print(f"unreadable: {error}", markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_INPUTS_FAILED) from None
        except KeyboardInterrupt:
            _interrupted(progress, console)
    _report(console, summary)


def translate_folder_videos(runner, input_dir: Path, output_dir: Path, *, crf: int, **options) -> int:
    """The videos under INPUT_DIR, after its images; returns how many could not be read (each named)."""
    from transgan.inference.video import list_videos, translate_videos

    if not list_videos(input_dir):
        return 0
    console = Console(stderr=True, highlight=False)
    with _progress(console) as progress:
        task = progress.add_task("video", total=None)

        def on_start(path: Path, position: int) -> None:
            progress.reset(task, total=None, description=path.name)

        try:
            summary = translate_videos(
                runner,
                input_dir,
                output_dir,
                crf=crf,
                on_start=on_start,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                on_warning=lambda line: console.print(f"warning: {line}", markup=False, soft_wrap=True),
                **options,
            )
        except KeyboardInterrupt:
            _interrupted(progress, console)
    for clip in summary.translated:
        _report(console, clip)
    console.print(
        f"{len(summary.translated)} videos translated, {summary.skipped_existing} skipped (output exists; "
        f"--overwrite to redo), {len(summary.unreadable)} unreadable",
        markup=False,
        soft_wrap=True,
    )
    for path, reason in summary.unreadable:
        console.print(f"  unreadable: {path}: {reason}", markup=False, soft_wrap=True)
    return len(summary.unreadable)


def _interrupted(progress: Progress, console: Console) -> None:
    progress.stop()
    console.print(
        "interrupted: finished videos are kept, the one in progress is not written; run the same command again",
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_INTERRUPTED) from None

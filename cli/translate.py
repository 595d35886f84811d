"""`transgan translate MODEL INPUT_DIR OUTPUT_DIR`: translate a folder of images, keeping relative paths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

EXIT_INPUTS_FAILED = 1  # the others are written; exit 2 (one error line) comes from transgan.cli.app
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class ImagesPerSecond(ProgressColumn):
    """Images per second since the start (rich's own speed column smooths over a short window only).

    Inputs already done when the run starts (outputs that exist) are not counted as speed.
    """

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        work = task.completed - task.fields.get("done_before", 0)
        speed = work / elapsed if elapsed > 0 else 0.0
        return Text(f"{speed:.1f} img/s")


def translate_command(
    model: Annotated[str, typer.Argument(help="model file, run directory, pretrained name or exported .onnx")],
    input_dir: Annotated[Path, typer.Argument(help="folder of images and videos (searched recursively), or a video")],
    output_dir: Annotated[Path, typer.Argument(help="where to write; must be outside INPUT_DIR")],
    context: typer.Context,
    direction: Annotated[str | None, typer.Option(help="AtoB or BtoA (default AtoB)")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="images per forward pass (default 8; --engine auto: the measured best)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="auto, torch, compiled, onnx or tensorrt (auto: onnx for .onnx files; for a model file the engine "
            "measured fastest on this machine, cached; measuring takes at most a tenth of the job, estimated from "
            "one timed image, else torch eager runs as it is; see the README's CPU engines)"
        ),
    ] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (torch autocast; onnx: the file's own)")] = "fp32",
    resize: Annotated[int | None, typer.Option(help="scale each image so its shorter side is N pixels first")] = None,
    png: Annotated[
        bool, typer.Option("--png", help="write every output as .png (default: the input's format)")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace outputs that already exist")] = False,
    workers: Annotated[int, typer.Option(min=1, help="decode and encode threads each")] = 2,
    crf: Annotated[int, typer.Option(min=0, max=63, help="videos: H.264 quality, 0 lossless .. 51 (18 looks it)")] = 18,
    eval_mode: Annotated[
        bool, typer.Option("--eval", help="run the generator in eval mode (pix2pix default: the reference's way)")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="CPU, --engine onnx or auto: an int8 graph, refused below --min-psnr")
    ] = False,
    calibrate: Annotated[Path | None, typer.Option(help="--int8: images to calibrate on (default INPUT_DIR)")] = None,
    min_psnr: Annotated[
        float | None, typer.Option(help="--int8: lowest PSNR (dB) against fp32 accepted (default 35)")
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option(help="run each image in tiles of N pixels, equal to the whole image (--engine auto: torch)"),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(help="e.g. 2GB: images whose activations would not fit run in tiles (torch engine)"),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(min=1, help="split the inputs over N processes on this machine (torchrun: one share per process)"),
    ] = None,
) -> None:
    """Translate every image in INPUT_DIR; outputs that exist are skipped, so an interrupted run resumes.

    An input that cannot be read (corrupt or truncated file, dangling or looping link) is named at the end,
    and the others are still translated.

    Exit status:
    0: every input translated, or its output already there;
    1: some inputs could not be read (each is named), the others are written;
    2: an error stopped the command (one 'error:' line naming the option, folder or model);
    130: interrupted (Ctrl-C); finished outputs are kept, run the same command again to continue.
    """
    from transgan.cli import video as video_cli

    from transgan.errors import TransganError
    from transgan.export.options import check_min_psnr
    from transgan.inference.engines import open_engine
    from transgan.inference.pipeline import check_folders, translate_folder
    from transgan.inference.sharding import current_shard, open_shared_choice, run_shards, shard_device

    if not int8 and (calibrate is not None or min_psnr is not None):
        raise TransganError("--calibrate and --min-psnr go with --int8 (they set up the int8 graph)")
    min_psnr = check_min_psnr(min_psnr)  # the one check of the bound, before anything slow
    shard = current_shard()  # under torchrun or --nproc: this process's share of the inputs
    if nproc is not None and nproc > 1:
        if not video_cli.is_clip(input_dir):
            check_folders(input_dir, output_dir)  # one error line here rather than one per process
        argv = same_command_without_nproc(context)
        raise typer.Exit(run_shards(nproc, argv, lambda line: typer.echo(line, err=True)))
    if video_cli.is_clip(input_dir) and shard.rank > 0:
        return  # one clip is one process's work: the first one's
    if video_cli.is_clip(input_dir):  # one video in, one video out (OUTPUT_DIR may name the file)
        options = {"engine": engine, "device": device, "precision": precision, "direction": direction}
        options.update(test_time="eval" if eval_mode else None, batch_size=batch_size or 8, resize=resize)
        options.update(tile=tile, max_memory=max_memory)
        options.update(int8=int8, calibrate=calibrate, min_psnr=min_psnr)  # a video has no images to calibrate on
        return video_cli.translate_clip(model, input_dir, output_dir, crf=crf, overwrite=overwrite, **options)
    check_folders(input_dir, output_dir)  # before opening the model, which may mean a slow ONNX export
    console = Console(stderr=True, highlight=False)
    test_time = "eval" if eval_mode else None
    int8_options = {"int8": int8, "calibrate": calibrate or input_dir, "min_psnr": min_psnr}
    if tile is not None or max_memory is not None:  # --engine auto: tiles run through the torch network
        from transgan.inference.tiles import open_tiled

        tiled_device = shard_device(device, shard) if shard.active else device
        options = {"engine": engine, "device": tiled_device, "precision": precision, "direction": direction}
        runner = open_tiled(model, tile, max_memory, test_time=test_time, **options)
    elif engine == "auto" and Path(model).suffix.lower() != ".onnx" and precision == "fp32" and shard.active:
        from transgan.inference.autotune import folder_sample

        sample, count = folder_sample(model, input_dir, direction, resize)
        device = shard_device(device, shard)
        runner, tuned_batch = open_shared_choice(model, device, direction, test_time, sample, count)
        batch_size = batch_size or tuned_batch
    elif engine == "auto" and Path(model).suffix.lower() != ".onnx" and precision == "fp32":
        from transgan.inference.autotune import folder_sample, open_auto
        from transgan.models import open_model

        model_file = open_model(model)  # resolved and read once; sampling, measuring and engines share it
        sample, count = folder_sample(model_file, input_dir, direction, resize)
        runner, tuned_batch = open_auto(
            model_file, device, direction, test_time, sample, count, int8_options["calibrate"] if int8 else None,
            min_psnr, say=lambda line: console.print(line, markup=False, soft_wrap=True),
        )  # fmt: skip
        batch_size = batch_size or tuned_batch
    else:
        options = {"engine": engine, "device": device, "precision": precision, "direction": direction}
        runner = open_engine(model, test_time=test_time, **options, **int8_options)
    batch_size = batch_size or 8
    share = f", process {shard.rank} of {shard.count}" if shard.active else ""
    console.print(f"translating with {runner.describe()}, batch {batch_size}{share}", markup=False)
    columns = [TextColumn("translate"), BarColumn(), MofNCompleteColumn(), ImagesPerSecond(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("translate", total=None)
        reached = [0, 0]  # done, total: what an interrupt reports

        def on_progress(done: int, total: int) -> None:
            if reached[1] == 0:  # the first call: inputs already done count as done, not as speed
                progress.reset(task, total=total, completed=done, done_before=done)
            progress.update(task, completed=done, total=total)
            reached[:] = [done, total]

        try:
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
                select=shard.select if shard.active else None,
            )
        except KeyboardInterrupt:
            progress.stop()
            console.print(
                f"interrupted: {reached[0]} of {reached[1]} inputs done, finished outputs are kept; "
                "run the same command again to continue",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(
        f"{summary.translated} translated ({summary.images_per_second:.1f} images/s), "
        f"{summary.skipped_existing} skipped (output exists; --overwrite to redo), "
        f"{len(summary.unreadable)} unreadable",
        markup=False,
        soft_wrap=True,
    )
    for path, reason in summary.unreadable:
        console.print(f"  unreadable: {path}: {reason}", markup=False, soft_wrap=True)
    options = {"batch_size": batch_size, "resize": resize, "overwrite": overwrite}
    options.update(select=shard.select_files if shard.active else None)  # videos: shared out by file size
    failed_videos = video_cli.translate_folder_videos(runner, input_dir, output_dir, crf=crf, **options)
    if summary.unreadable or failed_videos:
        raise typer.Exit(EXIT_INPUTS_FAILED)


def same_command_without_nproc(context: typer.Context) -> list[str]:
    """This command's arguments as given (defaults included), less --nproc: what each process of --nproc runs."""
    argv, level = [], context
    while level.parent is not None:  # the sub-command path under the root: ['translate'], ['eval', 'fid']
        argv.insert(0, level.info_name)
        level = level.parent
    for parameter in context.command.params:
        value = context.params.get(parameter.name)
        if parameter.name == "nproc" or value is None:
            continue
        if parameter.param_type_name == "argument":
            argv.append(str(value))
        elif parameter.is_flag:
            flag = parameter.opts[0] if value else (parameter.secondary_opts or [None])[0]
            argv += [flag] if flag else []
        else:
            argv += [parameter.opts[0], str(value)]
    return argv


def register(app: typer.Typer) -> None:
    """Add `translate` to the root app."""
    app.command("translate")(translate_command)

"""Batch folder translation: threaded decode, batched model, threaded encode, all overlapping."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from transgan.errors import TransganError
from transgan.images import UnreadableImage, check_folder, load_image, no_images_error, scan_images
from transgan.inference.engines import Engine

# The array conversions live in pixels.py (video.py uses them too); importable from here as before.
from transgan.inference.pixels import from_network, pad_to_multiple, to_network  # noqa: F401


@dataclass
class TranslateSummary:
    """What a folder run did: files written, skipped (output exists), failed inputs with the reason (by path)."""

    translated: int = 0
    skipped_existing: int = 0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.translated / self.seconds if self.seconds else 0.0


@dataclass
class Job:
    """One image on its way through the pipeline."""

    source: Path
    target: Path
    pixels: np.ndarray | None = None  # H x W x C uint8 after decode (padded before the model)
    source_size: tuple[int, int] = (0, 0)  # H, W before padding: the output is cropped back to it
    error: str | None = None


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Refuse output folders that could overwrite inputs or be read back as inputs."""
    check_folder(input_dir)
    source, target = input_dir.resolve(), output_dir.resolve()
    if target == source or source in target.parents:
        raise TransganError(f"{output_dir}: the output folder must be outside the input folder {input_dir}")
    if target in source.parents:
        # Outputs land at OUTPUT/<relative path>, which can fall inside INPUT and replace its files.
        raise TransganError(f"{output_dir}: the output folder must not contain the input folder {input_dir}")


def decode(path: Path, channels: int, resize: int | None) -> np.ndarray:
    """H x W x channels uint8, decoded by transgan.images' rules; `resize` scales the shorter side to N first."""
    image = load_image(path, channels)
    if resize:
        scale = resize / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def encode(pixels: np.ndarray, target: Path) -> None:
    """Write atomically: an interrupted run leaves no half-written file that a rerun would skip."""
    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    image_format = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    partial = target.with_name(f".{target.name}.partial")
    # PNG level 3 encodes twice as fast as PIL's default 6 for ~5% larger files: encoding shares the cores.
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 3}}.get(image_format, {})
    image.save(partial, format=image_format, **options)
    os.replace(partial, target)


def translate_folder(
    engine: Engine,
    input_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = 8,
    resize: int | None = None,
    overwrite: bool = False,
    png: bool = False,
    workers: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    select: Callable[[list[Path]], list[Path]] | None = None,
) -> TranslateSummary:
    """Translate every image under `input_dir` into `output_dir`, keeping relative paths and file names.

    Decoding and encoding run in thread pools while the model works on the previous batch. Images of
    different sizes are padded to the network's size multiple, grouped by padded size, and cropped back.
    `on_progress(done, total)` is called once at the start and after each image, counting every input (skipped,
    translated or failed); `on_warning(line)` for each input that cannot be read. Failed inputs are listed in
    the summary's `unreadable` and do not stop the run. `select(paths)` keeps this process's share of the inputs
    when several split the folder (see transgan.inference.sharding).
    """
    info = engine.info
    if info.get("kind") != "translator":
        raise TransganError(f"this model is a {info.get('kind')}, not a translator: use `transgan generate`")
    if batch_size < 1:
        raise TransganError(f"--batch-size {batch_size}: must be at least 1")
    if resize is not None and resize < 1:
        raise TransganError(f"--resize {resize}: must be a positive number of pixels")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_folders(input_dir, output_dir)
    listing = scan_images(input_dir)
    from transgan.inference.video import list_videos  # a folder of videos only is translated by video.py

    if not listing.files and not listing.problems and not list_videos(input_dir):
        raise no_images_error(listing)
    files, problems = listing.files, listing.problems
    if select is not None:  # one process of several: its share of the inputs, the same on every run
        files, mine = select(files), set(select([source for source, _ in problems]))
        problems = [(source, reason) for source, reason in problems if source in mine]
    summary = TranslateSummary()
    for source, reason in problems:  # dangling or looping links: inputs that failed before decoding
        summary.unreadable.append((source, reason))
        if on_warning:
            on_warning(f"skipped unreadable image {source}: {reason}")
    jobs = []
    for source in files:
        target = output_dir / source.relative_to(input_dir)
        target = target.with_suffix(".png") if png else target
        if target.exists() and not overwrite:
            summary.skipped_existing += 1
        else:
            jobs.append(Job(source, target))
    # Progress counts every input, so a run with nothing left to do shows N/N rather than an unknown total.
    total = len(files) + len(problems)
    done = total - len(jobs)
    if on_progress:
        on_progress(done, total)
    start = time.perf_counter()

    def finished(job: Job) -> None:
        nonlocal done
        done += 1
        if job.error is not None:
            summary.unreadable.append((job.source, job.error))
            if on_warning:
                on_warning(f"skipped unreadable image {job.source}: {job.error}")
        else:
            summary.translated += 1
        if on_progress:
            on_progress(done, total)

    with ThreadPoolExecutor(workers, "decode") as decoders, ThreadPoolExecutor(workers, "encode") as encoders:
        pending: deque[tuple[Future, Job]] = deque()
        for batch in _batches(_decoded(jobs, decoders, info["input_nc"], resize, batch_size), info, batch_size):
            for job in batch:
                if job.error is not None:
                    finished(job)
            good = [job for job in batch if job.error is None]
            if not good:
                continue
            for job, pixels in zip(good, _translate_batch(engine, good, batch_size)):
                job.pixels = None
                pending.append((encoders.submit(encode, pixels, job.target), job))
            # Drain finished writes so progress follows the files on disk and memory stays bounded.
            while pending and (pending[0][0].done() or len(pending) > 4 * batch_size):
                _finish_write(*pending.popleft(), finished)
        while pending:
            _finish_write(*pending.popleft(), finished)
    summary.unreadable.sort(key=lambda failure: failure[0].as_posix())
    summary.seconds = time.perf_counter() - start
    return summary


def _finish_write(future: Future, job: Job, finished: Callable[[Job], None]) -> None:
    try:
        future.result()
    except OSError as error:
        raise TransganError(f"{job.target}: cannot write the output ({error})") from error
    finished(job)


def _decoded(jobs: list[Job], pool: ThreadPoolExecutor, channels: int, resize: int | None, ahead: int) -> Iterator[Job]:
    """Jobs in order with pixels filled in, decoding up to 2 * `ahead` images in advance."""

    def work(job: Job) -> Job:
        try:
            job.pixels = decode(job.source, channels, resize)
        except UnreadableImage as error:
            job.error = error.reason.strip().split("\n")[0] or "unreadable"
        return job

    window: deque[Future] = deque()
    for job in jobs:
        window.append(pool.submit(work, job))
        if len(window) >= 2 * ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def _batches(jobs: Iterator[Job], info: dict, batch_size: int) -> Iterator[list[Job]]:
    """Lists of jobs whose padded images share one size (failed jobs pass through alone)."""
    multiple = int(info.get("size_multiple") or 1)
    groups: dict[tuple[int, ...], list[Job]] = {}
    for job in jobs:
        if job.error is not None:
            yield [job]
            continue
        job.source_size = job.pixels.shape[:2]
        job.pixels = pad_to_multiple(job.pixels, multiple)
        group = groups.setdefault(job.pixels.shape, [])
        group.append(job)
        if len(group) == batch_size:
            yield groups.pop(job.pixels.shape)
    yield from groups.values()


def _translate_batch(engine: Engine, batch: list[Job], batch_size: int) -> list[np.ndarray]:
    normalization = engine.info.get("normalization") or {"mean": 0.5, "std": 0.5}
    mean, std = float(normalization["mean"]), float(normalization["std"])
    images = np.stack([job.pixels for job in batch])
    if engine.replans_per_shape and len(batch) < batch_size:
        # A short batch would be a new input shape: repeat the last image instead (its outputs are dropped).
        images = np.concatenate([images, np.repeat(images[-1:], batch_size - len(batch), axis=0)])
    output = engine.run(to_network(images, mean, std))[: len(batch)]
    pixels = from_network(output, mean, std)
    # Crop the padding back off: outputs have the input's size.
    return [image[: job.source_size[0], : job.source_size[1]] for image, job in zip(pixels, batch)]

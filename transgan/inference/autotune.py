"""`--engine auto`: the engine and batch size for a job, measured when the job pays for it, remembered per machine.

The candidates (candidates.py) are timed against each other (measure.py) on real-sized inputs, and the choice is
cached per model content and machine (tuning_cache.py). What measuring may cost is set by the job: a first timed
run of the default engine times the number of images estimates it; measuring gets at most MEASURE_SHARE of that
(and at most the budget, 60 s by default), one-time exports at most PREPARE_SHARE; a job too small for any
measuring runs on the default engine, torch eager.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transgan.checkpoint import ModelFile
from transgan.errors import TransganError
from transgan.inference.candidates import INT8_EXPORT_S, affordable, default_candidates
from transgan.inference.engines import resolve_device
from transgan.inference.measure import BATCH_SIZES, Candidate, Measurement, measure, pick, time_run
from transgan.inference.torch_engine import Engine
from transgan.inference.tuning_cache import (
    Choice,
    choice_path,
    machine_description,
    read_choice,
    tuning_key,
    write_choice,
)
from transgan.models import model_digest, model_label, open_model

DEFAULT_BUDGET_S = 60.0
# Measuring may take this share of the job it serves: the rest of the job then runs on the measured best, so even
# a choice no better than the default leaves the run within a tenth of what the default alone would take.
MEASURE_SHARE = 0.1
# One-time exports (kept in the cache for every later run) may take this share: the graphs they enable measured
# 1.5-3x the default engine on this project's CPUs, so their cost is won back within the same job.
PREPARE_SHARE = 0.25
# A cached choice that left candidates out is measured again for a job this many times larger than its own.
REMEASURE_GROWTH = 2.0
SAMPLE_TRIES = 8  # files of a folder tried for the first timed image

__all__ = ["Candidate", "Choice", "Measurement", "autotune", "measure", "measuring_budget", "open_auto", "pick"]


def measuring_budget(job_s: float, budget_s: float = DEFAULT_BUDGET_S) -> tuple[float, float]:
    """(seconds measuring may take, seconds one-time exports may take) for a job estimated at `job_s` seconds."""
    return min(budget_s, MEASURE_SHARE * job_s), PREPARE_SHARE * job_s


def sample_factory(info: dict[str, Any], size: tuple[int, int], images: Sequence[np.ndarray] | None):
    """n -> run arguments for a batch of n: `images` (C x H x W in the network's range, repeated as needed) or
    random images of `size` for translators; noise (and class labels) for samplers."""
    rng = np.random.default_rng(0)
    if info["kind"] == "sampler":
        classes = int(info.get("num_classes") or 0)

        def noise(n: int) -> tuple:
            z = rng.standard_normal((n, info["latent_dim"]), dtype=np.float32)
            return (z, np.arange(n) % classes) if classes else (z,)

        return noise
    if images:
        if len({image.shape for image in images}) > 1:
            raise TransganError("autotune images must share one size; pass images of one size")
        pool = np.stack(list(images)).astype(np.float32)
    else:
        pool = rng.uniform(-1, 1, (4, info["input_nc"], *size)).astype(np.float32)
    return lambda n: (np.ascontiguousarray(pool[np.arange(n) % len(pool)]),)


def _setting(candidates: Sequence[Candidate], shape: tuple, direction, test_time, batch_sizes, int8: str | None):
    return {"candidates": [c.name for c in candidates], "size": list(shape), "direction": direction,
            "test_time": test_time, "batch_sizes": sorted(set(batch_sizes)), "int8": int8}  # fmt: skip


def _measured(
    model: ModelFile,
    candidates: Sequence[Candidate],
    sample: Callable[[int], tuple],
    batch_sizes: Sequence[int],
    budget_s: float,
    job_images: int | None,
    store: tuple[Path, str, dict, dict[str, Any]] | None,
    left_out: Sequence[str] = (),
    job_s: float | None = None,
) -> tuple[Choice, Engine]:
    """Measure `candidates`, pick for the job, store the choice (`store`: path, key, setting, machine), open."""
    measurements, engines, skipped = measure(candidates, sample, batch_sizes, budget_s)
    best = pick(measurements, job_images)
    path, key, setting, machine = store if store else (None, "", {}, machine_description("cpu"))
    choice = Choice(best.engine, best.batch_size, best.images_per_s, key, machine, measurements, skipped,
                    left_out=list(left_out), job_s=job_s)  # fmt: skip
    if path is not None:
        write_choice(path, choice, setting, str(model.source))
    chosen = engines.pop(best.engine)
    for engine in engines.values():
        engine.close()
    return choice, chosen


def autotune(
    model: str | Path | ModelFile,
    device: str = "cpu",
    direction: str | None = None,
    test_time: str | None = None,
    size: tuple[int, int] = (256, 256),
    images: Sequence[np.ndarray] | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    budget_s: float = DEFAULT_BUDGET_S,
    int8: Path | None = None,
    compiled: bool = False,
    candidates: Sequence[Candidate] | None = None,
    cache: bool = True,
    job_images: int | None = None,
) -> tuple[Choice, Engine]:
    """The fastest (engine, batch size) for `model` on `device` among all `candidates`, and that engine, open.

    Measured within `budget_s` (see measure.measure), or read from the cache, whose entries are keyed by the model
    file's content, `machine_description(device)` and the setting (the candidates' names, input size, direction,
    batch sizes). `images` (C x H x W, network range, one size) are real inputs to time on; without them random
    images of `size`. `candidates` replaces the default ones (see candidates.default_candidates). `job_images`: the
    number of images the engine is opened for; the choice then also weighs each engine's setup time (see `pick`).
    """
    device = resolve_device(device)
    model = open_model(model)  # the one read of the model file; everything below takes the ModelFile
    shape = tuple(images[0].shape[1:]) if images else tuple(size)
    if candidates is None:
        candidates = default_candidates(model, device, direction, test_time, shape, int8, compiled=compiled)
    setting = _setting(candidates, shape, direction, test_time, batch_sizes, int8.name if int8 else None)
    machine = machine_description(device)
    key = tuning_key(model_digest(model), machine, device, setting)
    path = choice_path(model_label(model), key)
    found = read_choice(path, key) if cache else None
    if found is not None:
        best = pick(found.measurements, job_images)
        found.engine, found.batch_size, found.images_per_s = best.engine, best.batch_size, best.images_per_s
        for candidate in candidates:
            if candidate.name == found.engine:
                return found, candidate.open()
    info = model.info(direction).as_dict()
    store = (path, key, setting, machine) if cache else None
    return _measured(model, candidates, sample_factory(info, shape, images), batch_sizes, budget_s, job_images, store)


class _Opened:
    """The default engine's opener: the engine already open (timed for the job estimate) first, fresh ones after."""

    def __init__(self, engine: Engine, opener: Callable[[], Engine]):
        self.engine, self.opener = engine, opener

    def __call__(self) -> Engine:
        engine, self.engine = self.engine, None
        return engine if engine is not None else self.opener()


def open_auto(
    model: str | Path | ModelFile,
    device: str = "auto",
    direction: str | None = None,
    test_time: str | None = None,
    sample: np.ndarray | None = None,
    job_images: int | None = None,
    int8_calibrate: str | Path | None = None,
    min_psnr: float | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    say: Callable[[str], None] | None = None,
    seconds_per_image: float | None = None,
) -> tuple[Engine, int | None]:
    """What `--engine auto` opens for a model: an engine and its batch size (None: the caller's own).

    A cached choice is used as it is, unless it left out candidates this job can afford. Otherwise the default
    engine runs `sample` (C x H x W, network range) once, or takes `seconds_per_image` as given, and `job_images`
    times that estimates the job: the candidates that fit its measuring and export shares (see `measuring_budget`)
    are measured and the choice cached; when none but the default fits, the default runs without measuring. With
    `int8_calibrate` (CPU) an int8 export calibrated on that folder is a candidate that is always measured (its
    export is not counted, the user asked for it); a job too small to measure it is refused before exporting.
    """
    say = say or (lambda line: None)
    device = resolve_device(device)
    model = open_model(model)
    int8, int8_key, int8_cost = None, None, 0.0
    if int8_calibrate is not None:
        if device != "cpu":
            raise TransganError("--int8 runs on --device cpu (ONNX Runtime's int8 CPU kernels)")
        from transgan.export.int8_cache import exported_int8, int8_cache_paths

        graph, refused = int8_cache_paths(model, int8_calibrate, direction, min_psnr, test_time)
        int8_key, int8_cost = graph.name, 0.0 if graph.is_file() or refused.is_file() else INT8_EXPORT_S

        def int8() -> Path:
            return exported_int8(model, int8_calibrate, direction, min_psnr, test_time, say)

    shape = tuple(sample.shape[1:]) if sample is not None else (256, 256)
    candidates = default_candidates(model, device, direction, test_time, shape, int8, int8_cost, compiled=True)
    if int8 is not None:  # asked for: measured right after the default, whatever else fits
        first = candidates[0]
        candidates.sort(key=lambda c: 0 if c is first else 1 if c.name == "onnx-int8" else 2)
    setting = _setting(candidates, shape, direction, test_time, BATCH_SIZES, int8_key)
    machine = machine_description(device)
    key = tuning_key(model_digest(model), machine, device, setting)
    path = choice_path(model_label(model), key)
    found = read_choice(path, key)
    if found is not None and not _worth_remeasuring(found, candidates, job_images, budget_s, seconds_per_image):
        best = pick(found.measurements, job_images)
        found.engine, found.batch_size, found.images_per_s = best.engine, best.batch_size, best.images_per_s
        say(f"engine chosen by measuring on this machine (cached): {found.summary()}")
        return next(c for c in candidates if c.name == found.engine).open(), found.batch_size
    default = candidates[0]
    engine = default.open()
    if seconds_per_image is None and sample is not None:
        seconds_per_image = time_run(engine, (sample[None],))
    if not job_images:  # no job to serve (a library call): the budget alone
        measure_s, prepare_s, seconds_per_image = budget_s, math.inf, seconds_per_image or 0.0
    elif seconds_per_image is None:  # a job, but no image to time it on: nothing says measuring would pay
        measure_s, prepare_s, seconds_per_image = 0.0, 0.0, math.inf
    else:
        measure_s, prepare_s = measuring_budget(job_images * seconds_per_image, budget_s)
        prepare_s /= machine_slowdown()  # the export estimates are for an idle machine; the first timing is not
    for candidate in candidates:
        if candidate.name.startswith("onnx-int8"):
            candidate.prepare_s = 0.0
    chosen, left = affordable(candidates, seconds_per_image, measure_s, prepare_s)
    if int8 is not None and not any(c.name == "onnx-int8" for c in chosen):
        engine.close()
        raise TransganError(
            f"--int8 with --engine auto: {job_images} images ({_work(job_images, seconds_per_image)}) "
            f"are too few to measure the int8 graph against the others (measuring may take a tenth of the job); "
            "use --engine onnx --int8 to run it without measuring"
        )
    if len(chosen) == 1:
        say(f"{job_images} images ({_work(job_images, seconds_per_image)}): running the default "
            "engine without measuring (a tenth of this job would not pay for measuring others)")  # fmt: skip
        return engine, None
    chosen[0] = Candidate(default.name, _Opened(engine, default.open), default.prepare, default.prepare_s)
    say(f"measuring {len(chosen)} engines for this model on this machine (about {measure_s:.0f} s plus "
        f"one-time exports, once; cached)")  # fmt: skip
    info = model.info(direction).as_dict()
    images = [sample] if sample is not None else None
    store = (path, key, setting, machine)
    left_out = [c.name for c in left]
    job_s = job_images * seconds_per_image if job_images and math.isfinite(seconds_per_image) else None
    choice, engine = _measured(model, chosen, sample_factory(info, shape, images), BATCH_SIZES, measure_s,
                               job_images, store, left_out, job_s)  # fmt: skip
    say(f"chose {choice.summary()}")
    return engine, choice.batch_size


def machine_slowdown() -> float:
    """How much slower than idle this machine runs now: the 1-minute load average per usable core (at least 1)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform: assume idle
        return 1.0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1.0, load / max(1, cores))


def _work(images: int | None, seconds: float) -> str:
    return f"about {images * seconds:.0f} s of work" if math.isfinite(seconds) else "no readable image to time"


def _worth_remeasuring(
    found: Choice, candidates: Sequence[Candidate], job_images: int | None, budget_s: float, seconds: float | None
) -> bool:
    """Whether a cached choice that left candidates out (too costly for its job) should be measured again: when
    this job is at least REMEASURE_GROWTH times the one it was measured for and its shares afford one of them (the
    job estimated from `seconds` per image, by default the cached speed of the default engine)."""
    if not found.left_out or not job_images:
        return False
    default = candidates[0].name
    speeds = [m.images_per_s for m in found.measurements if m.engine == default and m.batch_size == 1]
    if seconds is None and not speeds:
        return False
    seconds = seconds if seconds is not None else 1 / speeds[0]
    job_s = job_images * seconds
    if found.job_s is not None and job_s < REMEASURE_GROWTH * found.job_s:
        return False  # about the job it was measured for: the same candidates would fit, the choice stands
    chosen, _ = affordable(candidates, seconds, *measuring_budget(job_s, budget_s))
    return any(candidate.name in found.left_out for candidate in chosen)


def folder_sample(
    model: str | Path | ModelFile, input_dir: str | Path, direction: str | None = None, resize: int | None = None
) -> tuple[np.ndarray | None, int]:
    """(the first image of a folder as the network sees it, C x H x W, or None; the number of images in it):
    what `open_auto` times a first run on and scales by."""
    from transgan.images import UnreadableImage, scan_images
    from transgan.inference.pipeline import decode
    from transgan.inference.pixels import pad_to_multiple, to_network

    files = scan_images(input_dir).files
    if not files:
        return None, 0
    info = open_model(model).info(direction).as_dict()
    if info["kind"] != "translator":
        return None, len(files)
    norm = info.get("normalization") or {"mean": 0.5, "std": 0.5}
    for path in files[:SAMPLE_TRIES]:  # an unreadable first file must not leave the job without an estimate
        try:
            pixels = pad_to_multiple(decode(path, info["input_nc"], resize), int(info.get("size_multiple") or 1))
        except UnreadableImage:
            continue
        return to_network(pixels[None], float(norm["mean"]), float(norm["std"]))[0], len(files)
    return None, len(files)

"""Pick the fastest engine and batch size for a model on the machine at hand by measuring; remember the choice.

No engine is preferred in advance: what wins on one CPU (ONNX Runtime with Winograd rewrites on an AVX-512
machine) can lose on another (an AVX2-only one), so every candidate is timed on real-sized inputs, interleaved
round by round, within a time budget. The choice is cached per model file content and machine (CPU model, core
count, instruction-set flags, torch and ONNX Runtime versions) as JSON in the transgan cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transgan import __version__
from transgan.errors import TransganError
from transgan.inference.engines import Engine, OnnxEngine, exported_onnx, open_engine, resolve_device
from transgan.models import cache_dir, resolve_model_path

# The instruction-set features that decide which kernels run fast (x86 and ARM); others do not change the choice.
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")  # fmt: skip
BATCH_SIZES = (1, 2, 4, 8, 16)
DEFAULT_BUDGET_S = 60.0
# After the first batch size, engines this much slower than the best stop being measured: batching does not
# close a gap of that size, and their runs would eat the budget the close ones need.
KEEP_WITHIN = 1.3
# Below this much expected work (images x one eager run), measuring engines would cost more than it could save.
AUTOTUNE_MIN_JOB_S = 10.0
TUNING_FORMAT = 1  # bump when the measurement changes meaning: older cached choices are then ignored


@dataclass
class Candidate:
    """An engine to try: its name and how to open it (opening may export or compile and take a while)."""

    name: str
    open: Callable[[], Engine]


@dataclass
class Measurement:
    """One candidate at one batch size: images per second (median of interleaved runs)."""

    engine: str
    batch_size: int
    images_per_s: float
    runs: int
    setup_s: float = 0.0  # opening the engine and its first run; warm (caches filled) where setup_warm
    setup_warm: bool = False


@dataclass
class Choice:
    """The engine and batch size that measured fastest, with everything that was measured."""

    engine: str
    batch_size: int
    images_per_s: float
    key: str
    machine: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not measured
    from_cache: bool = False

    def summary(self) -> str:
        source = "cached choice" if self.from_cache else f"measured {len(self.measurements)} configurations"
        return f"{self.engine} at batch {self.batch_size}: {self.images_per_s:.2f} images/s ({source})"


def cpu_description() -> dict[str, Any]:
    """CPU model name, core counts and the instruction-set flags of ISA_FLAGS that this CPU has."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and name in ("", platform.processor(), platform.machine()):
                name = value.strip() or name
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the name and core count still tell machines apart
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name, "cores": os.cpu_count(), "usable_cores": usable,
            "isa": [flag for flag in ISA_FLAGS if flag in flags]}  # fmt: skip


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """What a tuning result depends on besides the model: the CPU (and GPU), torch and ONNX Runtime versions."""
    machine: dict[str, Any] = {**cpu_description(), "torch": torch.__version__, "transgan": __version__}
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        machine["onnxruntime"] = None
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        machine["gpu"] = torch.cuda.get_device_name(index)
        machine["gpu_capability"] = list(torch.cuda.get_device_capability(index))
    return machine


def file_digest(path: Path) -> str:
    """sha256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tuning_key(model_digest: str, machine: dict[str, Any], device: str, setting: dict[str, Any]) -> str:
    """The cache key: model content, machine, device and what was tried (candidates, size, direction...)."""
    text = json.dumps([TUNING_FORMAT, model_digest, machine, device, setting], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _time_run(engine: Engine, batch: tuple) -> float:
    start = time.perf_counter()
    engine.run(*batch)  # returns host arrays: any GPU work is finished when it returns
    return time.perf_counter() - start


def measure(
    candidates: Sequence[Candidate],
    sample: Callable[[int], tuple],
    batch_sizes: Sequence[int] = BATCH_SIZES,
    budget_s: float = DEFAULT_BUDGET_S,
    rounds: int = 5,
) -> tuple[list[Measurement], dict[str, Engine], dict[str, str]]:
    """Time every candidate at each batch size, interleaved round by round, within about `budget_s` seconds.

    Opening the candidates (which may export or compile for the first time) is not counted. Each candidate gets
    at least one warm-up and one timed run at the smallest batch size whatever the budget (nothing could be
    chosen otherwise); more rounds and larger batches only while the budget lasts, and larger batches only for
    candidates within KEEP_WITHIN of the best so far (within a batch size too, rounds after the first are only
    for the candidates within KEEP_WITHIN of the fastest). The setup (opening and a first run) of the candidates
    within KEEP_WITHIN of the fastest is timed again with their caches warm, as a later process would pay it.
    Returns the measurements, the opened engines by name, and the candidates that could not be opened with the
    reason.
    """
    engines: dict[str, Engine] = {}
    setup: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for candidate in candidates:
        began = time.perf_counter()
        try:
            engines[candidate.name] = candidate.open()
        except (TransganError, ImportError, RuntimeError) as error:  # e.g. an int8 export refused on PSNR
            skipped[candidate.name] = (str(error).strip().splitlines() or [type(error).__name__])[0]
            continue
        setup[candidate.name] = time.perf_counter() - began
    if not engines:
        raise TransganError("no engine could be opened: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    start = time.perf_counter()
    results: list[Measurement] = []
    active = list(engines)
    for index, batch_size in enumerate(sorted(set(batch_sizes))):
        batch = sample(batch_size)
        times: dict[str, list[float]] = {name: [] for name in active}
        for name in active:
            began = time.perf_counter()
            engines[name].run(*batch)  # warm-up: allocation, kernel plans, compilation for this shape
            setup[name] += time.perf_counter() - began if index == 0 else 0.0
        timing = list(active)
        for round_index in range(rounds):
            if round_index:  # after a round, only the candidates close to the best get more (the budget is theirs)
                fastest = min(statistics.median(times[name]) for name in timing)
                timing = [name for name in timing if statistics.median(times[name]) <= fastest * KEEP_WITHIN]
                per_round = sum(statistics.median(times[name]) for name in timing)
                if time.perf_counter() - start + per_round > budget_s:
                    break
            for name in timing:
                times[name].append(_time_run(engines[name], batch))
        for name in active:
            median = statistics.median(times[name])
            results.append(Measurement(name, batch_size, round(batch_size / median, 4), len(times[name]),
                                       round(setup[name], 2)))  # fmt: skip
        best = max(m.images_per_s for m in results)
        mine = {m.engine: m.images_per_s for m in results if m.batch_size == batch_size}
        active = [name for name in active if mine[name] * KEEP_WITHIN >= best]
        if not active:  # every candidate got slower with this batch size: larger ones will not win
            break
        # The next batch doubles the work of a run: stop where its warm-up and one round would not fit.
        next_round = sum(2 * batch_size / mine[name] for name in active) * 2
        if time.perf_counter() - start + next_round > budget_s:
            break
    fastest = max(m.images_per_s for m in results)
    close = {m.engine for m in results if m.images_per_s * KEEP_WITHIN >= fastest}
    warm = _warm_setup([c for c in candidates if c.name in close], sample(min(batch_sizes)))
    for measurement in results:
        if measurement.engine in warm:
            measurement.setup_s, measurement.setup_warm = warm[measurement.engine], True
    return results, engines, skipped


def _warm_setup(candidates: Sequence[Candidate], batch: tuple) -> dict[str, float]:
    """Seconds to open each candidate again and run it once, now that its exports and compiled code are cached."""
    seconds = {}
    for candidate in candidates:
        began = time.perf_counter()
        engine = candidate.open()
        engine.run(*batch)
        seconds[candidate.name] = round(time.perf_counter() - began, 2)
        engine.close()
    return seconds


def pick(measurements: Sequence[Measurement], images: int | None = None) -> Measurement:
    """The fastest configuration: most images/s, or for a job of `images` images the least setup + run time."""
    if images is None:
        return max(measurements, key=lambda m: m.images_per_s)
    return min(measurements, key=lambda m: m.setup_s + images / m.images_per_s)


class ThreadCapped(Engine):
    """A torch engine run with at most `threads` intra-op threads (torch's count is per process: set per run).

    On a CPU that other work shares, fewer threads than cores can be faster: an OpenMP team waits at every
    barrier for its slowest thread, and a thread that loses its core stalls the whole team.
    """

    def __init__(self, inner: Engine, threads: int):
        self.inner, self.threads = inner, threads
        self.name, self.info, self.device, self.precision = inner.name, inner.info, inner.device, inner.precision
        self.replans_per_shape = inner.replans_per_shape

    def describe(self) -> str:
        return f"{self.inner.describe()}, {self.threads} thread{'s' if self.threads > 1 else ''}"

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.inner.run(batch, labels)
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        self.inner.close()


def thread_counts(device: str) -> list[int]:
    """Intra-op thread counts worth trying: 0 (the runtime's default, every core) and half the usable cores."""
    if device != "cpu":
        return [0]
    usable = cpu_description()["usable_cores"] or 1
    return [0, usable // 2] if usable >= 2 else [0]


def default_candidates(
    path: Path,
    device: str,
    direction: str | None = None,
    test_time: str | None = None,
    int8: Path | None = None,
    compiled: bool = False,
    threads: Sequence[int] | None = None,
) -> list[Candidate]:
    """The engines worth timing for a model file on `device`, each with every count of `threads` (default
    `thread_counts(device)`; 0 = the runtime's own): torch eager, ONNX Runtime (plain graph and, on CPU, the graph
    with CPU rewrites), an int8 graph when one is given, and torch.compile when asked (its first compile takes
    a minute or more on a small CPU; later processes reuse torch's on-disk cache). Names: engine[@threads]."""
    options = {"direction": direction, "test_time": test_time}

    def onnx(for_cpu: bool) -> Callable[[int], Engine]:
        return lambda n: OnnxEngine(exported_onnx(path, direction, for_cpu, test_time), device, threads=n)

    def capped(opener: Callable[[], Engine]) -> Callable[[int], Engine]:
        return lambda n: ThreadCapped(opener(), n) if n else opener()

    engines: list[tuple[str, Callable[[int], Engine]]] = [
        ("torch", capped(lambda: open_engine(path, engine="torch", device=device, **options))),
        ("onnx", onnx(for_cpu=False)),
    ]
    if device == "cpu":
        engines.append(("onnx-cpu", onnx(for_cpu=True)))
        if int8 is not None:
            engines.append(("onnx-int8", lambda n: OnnxEngine(int8, "cpu", threads=n)))
    if compiled:
        from transgan.inference.compiled import open_compiled

        engines.append(("compiled", capped(lambda: open_compiled(path, device, **options))))
    candidates = []
    for name, opener in engines:
        for count in threads if threads is not None else thread_counts(device):
            label = f"{name}@{count}" if count else name
            candidates.append(Candidate(label, lambda opener=opener, count=count: opener(count)))
    return candidates


def _sample_factory(info: dict[str, Any], size: tuple[int, int], images: Sequence[np.ndarray] | None):
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


def _read_cached(path: Path, key: str) -> Choice | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: measure again
    if data.get("key") != key:
        return None
    measurements = [Measurement(**m) for m in data.get("measurements", [])]
    choice = {k: data["choice"][k] for k in ("engine", "batch_size", "images_per_s")}
    return Choice(**choice, key=key, machine=data["machine"], measurements=measurements,
                  skipped=data.get("skipped", {}), from_cache=True)  # fmt: skip


def _write_cached(path: Path, choice: Choice, setting: dict[str, Any], model: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"key": choice.key, "model": str(model), "setting": setting, "machine": choice.machine,
            "choice": {"engine": choice.engine, "batch_size": choice.batch_size,
                       "images_per_s": choice.images_per_s},
            "measurements": [asdict(m) for m in choice.measurements], "skipped": choice.skipped,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)


def autotune(
    model: str | Path,
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
    measure_missing: bool = True,
) -> tuple[Choice | None, Engine | None]:
    """The fastest (engine, batch size) for the model file meant by `model` on `device`, and that engine, open.

    Measured (see `measure`), or read from the cache, whose entries are keyed by the model file's content,
    `machine_description(device)` and the setting (the candidates' names, input size, direction, batch sizes).
    `images` (C x H x W, network range, one size) are real inputs to time on; without them random images of
    `size`. `candidates` replaces the default ones (see `default_candidates`). `job_images`: the number of images
    the engine is opened for; the choice then also weighs each engine's setup time (see `pick`). Without a
    cached choice and with `measure_missing` off, returns (None, None) instead of measuring.
    """
    device = resolve_device(device)
    path = resolve_model_path(model)
    if path.suffix.lower() == ".onnx":
        raise TransganError(f"{model}: autotune picks among engines for a model file; an .onnx file runs as it is")
    if candidates is None:
        candidates = default_candidates(path, device, direction, test_time, int8, compiled)
    machine = machine_description(device)
    shape = tuple(images[0].shape[1:]) if images else tuple(size)
    # An int8 graph's file name holds the digest of its model, calibration folder and bound.
    setting = {"candidates": [c.name for c in candidates], "size": list(shape), "direction": direction,
               "test_time": test_time, "batch_sizes": sorted(set(batch_sizes)),
               "int8": int8.name if int8 is not None else None}  # fmt: skip
    key = tuning_key(file_digest(path), machine, device, setting)
    cached_path = cache_dir() / "autotune" / f"{path.stem}-{key}.json"
    found = _read_cached(cached_path, key) if cache else None
    if found is not None:
        best = pick(found.measurements, job_images)
        found.engine, found.batch_size, found.images_per_s = best.engine, best.batch_size, best.images_per_s
        for candidate in candidates:
            if candidate.name == found.engine:
                return found, candidate.open()
    if not measure_missing:
        return None, None
    from transgan.checkpoint import read_model

    info = read_model(path).info(direction).as_dict()
    measurements, engines, skipped = measure(candidates, _sample_factory(info, shape, images), batch_sizes, budget_s)
    best = pick(measurements, job_images)
    choice = Choice(best.engine, best.batch_size, best.images_per_s, key, machine, measurements, skipped)
    if cache:
        _write_cached(cached_path, choice, setting, path)
    chosen = engines.pop(best.engine)
    for engine in engines.values():
        engine.close()
    return choice, chosen


def open_auto(
    model: str | Path,
    device: str = "auto",
    direction: str | None = None,
    test_time: str | None = None,
    sample: np.ndarray | None = None,
    job_images: int | None = None,
    int8_calibrate: str | Path | None = None,
    min_psnr: float | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    say: Callable[[str], None] | None = None,
) -> tuple[Engine, int | None]:
    """What `--engine auto` opens for a model file: the measured fastest engine and its batch size (None: the
    caller's own), measured once per model and machine and cached.

    A cached choice is used whatever the job. Without one, measuring (up to `budget_s` plus one-time exports and
    compiles) is done only when the job is worth it: `job_images` times one eager run on `sample` (C x H x W,
    network range) at least AUTOTUNE_MIN_JOB_S seconds; smaller jobs run on torch eager as they are. With
    `int8_calibrate` (CPU), an int8 export calibrated on that folder (see transgan.export.int8) is a candidate
    when it meets `min_psnr`; a refusal is reported through `say` and the others compete.
    """
    from transgan.export.int8 import DEFAULT_MIN_PSNR, exported_int8

    say = say or (lambda line: None)
    device = resolve_device(device)
    path = resolve_model_path(model)
    int8 = None
    if int8_calibrate is not None and device == "cpu":
        try:
            int8 = exported_int8(path, int8_calibrate, direction, min_psnr or DEFAULT_MIN_PSNR, test_time, say)
        except TransganError as error:
            if "dB" not in str(error):
                raise
            say(f"int8 left out: {error}")
    images = [sample] if sample is not None else None
    options = {"device": device, "direction": direction, "test_time": test_time, "images": images,
               "int8": int8, "compiled": True, "job_images": job_images, "budget_s": budget_s}  # fmt: skip
    choice, engine = autotune(path, measure_missing=False, **options)
    if choice is not None:
        say(f"engine chosen by measuring on this machine (cached): {choice.summary()}")
        return engine, choice.batch_size
    eager = open_engine(path, engine="torch", device=device, direction=direction, test_time=test_time)
    if sample is not None and job_images:
        seconds = _time_run(eager, (sample[None],))
        if seconds * job_images < AUTOTUNE_MIN_JOB_S:
            return eager, None
    eager.close()
    say(f"measuring engines and batch sizes for this model on this machine (about {budget_s:.0f} s, once)")
    choice, engine = autotune(path, **options)
    say(f"chose {choice.summary()}")
    return engine, choice.batch_size


def folder_sample(
    model: str | Path, input_dir: str | Path, direction: str | None = None, resize: int | None = None
) -> tuple[np.ndarray | None, int]:
    """(the first image of a folder as the network sees it, C x H x W, or None; the number of images in it):
    what `open_auto` times an eager run on and scales by."""
    from transgan.checkpoint import read_model
    from transgan.images import UnreadableImage, scan_images
    from transgan.inference.pipeline import decode, pad_to_multiple, to_network

    files = scan_images(input_dir).files
    if not files:
        return None, 0
    path = resolve_model_path(model)
    info = read_model(path).info(direction).as_dict()
    if info["kind"] != "translator":
        return None, len(files)
    norm = info.get("normalization") or {"mean": 0.5, "std": 0.5}
    try:
        pixels = pad_to_multiple(decode(files[0], info["input_nc"], resize), int(info.get("size_multiple") or 1))
    except UnreadableImage:
        return None, len(files)
    return to_network(pixels[None], float(norm["mean"]), float(norm["std"]))[0], len(files)

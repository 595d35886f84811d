"""Timing engines against each other: interleaved rounds within a time budget, and the pick for a job size."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transgan.errors import TransganError
from transgan.inference.torch_engine import Engine

BATCH_SIZES = (1, 2, 4, 8, 16)
# After the first batch size, engines this much slower than the best stop being measured: batching does not
# close a gap of that size, and their runs would eat the budget the close ones need.
KEEP_WITHIN = 1.3


@dataclass
class Candidate:
    """An engine to try: its name, how to open it (opening may export or compile and take a while), and what
    opening costs the first time: `prepare` names the one-time artefact (an export, a compile; shared by the
    thread-count variants of one engine), `prepare_s` its estimated seconds (0 when it is cached or cheap)."""

    name: str
    open: Callable[[], Engine]
    prepare: str | None = None
    prepare_s: float = 0.0


@dataclass
class Measurement:
    """One candidate at one batch size: images per second (median of interleaved runs)."""

    engine: str
    batch_size: int
    images_per_s: float
    runs: int
    setup_s: float = 0.0  # opening the engine and its first run; warm (caches filled) where setup_warm
    setup_warm: bool = False


def time_run(engine: Engine, batch: tuple) -> float:
    """Seconds one run of `engine` on `batch` takes (host arrays out: any GPU work is finished)."""
    start = time.perf_counter()
    engine.run(*batch)
    return time.perf_counter() - start


def measure(
    candidates: Sequence[Candidate],
    sample: Callable[[int], tuple],
    batch_sizes: Sequence[int] = BATCH_SIZES,
    budget_s: float = 60.0,
    rounds: int = 5,
) -> tuple[list[Measurement], dict[str, Engine], dict[str, str]]:
    """Time every candidate at each batch size, interleaved round by round, within about `budget_s` seconds.

    Opening the candidates (which may export or compile for the first time) is not counted. Each candidate gets
    at least one warm-up and one timed run at the smallest batch size whatever the budget (nothing could be
    chosen otherwise); more rounds and larger batches only while the budget lasts, and larger batches only for
    candidates within KEEP_WITHIN of the best so far (within a batch size too, rounds after the first are only
    for the candidates within KEEP_WITHIN of the fastest, and none once only one is). The setup (opening and a
    first run) of the candidates within KEEP_WITHIN of the fastest is timed again with their caches warm, as a
    later process would pay it. Returns the measurements, the opened engines by name, and the candidates that
    could not be opened with the reason.
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
                if len(timing) == 1 < len(active):  # the others are out of reach: more rounds would decide nothing
                    break
                per_round = sum(statistics.median(times[name]) for name in timing)
                if time.perf_counter() - start + per_round > budget_s:
                    break
            for name in timing:
                times[name].append(time_run(engines[name], batch))
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

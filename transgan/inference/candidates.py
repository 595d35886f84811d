"""The engines `--engine auto` may choose among for a model, and what opening each costs the first time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from transgan.checkpoint import ModelFile
from transgan.inference.compiled import open_compiled
from transgan.inference.engines import OnnxEngine, SizedEngine, exported_onnx, exported_onnx_path, torch_engine
from transgan.inference.measure import Candidate
from transgan.inference.torch_engine import Engine
from transgan.inference.tuning_cache import cpu_description

# What opening a candidate costs the first time on a small CPU, before its artefact is cached (measured on this
# project's 2-core CPU for resnet_9blocks ngf 64, a loaded machine: static export with CPU rewrites 2-4 s, dynamic
# plain export 6-7 s, dynamic with CPU rewrites ~34 s, int8 calibration minutes, torch.compile a minute or more).
STATIC_EXPORT_S = 5.0
DYNAMIC_EXPORT_S = 10.0
DYNAMIC_CPU_EXPORT_S = 35.0
INT8_EXPORT_S = 180.0
COMPILE_S = 90.0


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
    model: ModelFile,
    device: str,
    direction: str | None = None,
    test_time: str | None = None,
    size: tuple[int, int] | None = None,
    int8: Path | Callable[[], Path] | None = None,
    int8_prepare_s: float = 0.0,
    compiled: bool = False,
    threads: Sequence[int] | None = None,
) -> list[Candidate]:
    """The engines worth timing for `model` on `device`, cheapest to open first, the default one first of all.

    CPU: torch eager (the default: nothing to export; as the network was trained), ONNX Runtime on the graph with
    the CPU rewrites exported for `size` (H, W) at batch 1 (other sizes run on torch eager; samplers: the dynamic
    graph), torch eager with the CPU rewrites, ONNX Runtime on the plain dynamic graph, an int8 graph when one is
    given (a path, or a function that exports it), and torch.compile when asked. GPU: torch eager, ONNX Runtime,
    torch.compile. Each with every count of `threads` (default `thread_counts(device)`; 0 = the runtime's own).
    Names: engine[@threads].
    """
    options = {"direction": direction, "test_time": test_time}
    translator = model.info(direction).kind == "translator"

    def capped(opener: Callable[[], Engine]) -> Callable[[int], Engine]:
        return lambda n: ThreadCapped(opener(), n) if n else opener()

    def cost(path: Path, seconds: float) -> float:
        return 0.0 if path.is_file() else seconds

    def onnx(for_cpu: bool, shape: tuple[int, int] | None) -> Callable[[int], Engine]:
        def opener(n: int) -> Engine:
            graph = OnnxEngine(exported_onnx(model, direction, for_cpu, test_time, shape), device, threads=n)
            if shape is None:
                return graph
            return SizedEngine(graph, shape, torch_engine(model, device, copy_net=True, **options))

        return opener

    plain_cost = cost(exported_onnx_path(model, direction, False, test_time), DYNAMIC_EXPORT_S)
    # (name, opener(threads), one-time artefact, its estimated seconds)
    engines: list[tuple[str, Callable[[int], Engine], str | None, float]] = []
    if device == "cpu":
        shape = tuple(size) if translator and size is not None else None
        sized = exported_onnx_path(model, direction, True, test_time, shape)
        sized_cost = cost(sized, STATIC_EXPORT_S if shape else DYNAMIC_CPU_EXPORT_S)
        engines += [
            ("torch", capped(lambda: torch_engine(model, device, copy_net=True, **options)), None, 0.0),
            ("onnx-cpu", onnx(True, shape), "onnx-cpu", sized_cost),
            ("torch-cpu", capped(lambda: torch_engine(model, device, for_cpu=True, **options)), None, 0.0),
            ("onnx", onnx(False, None), "onnx", plain_cost),
        ]  # fmt: skip
        if int8 is not None:
            graph = int8 if callable(int8) else (lambda: int8)
            engines.append(("onnx-int8", lambda n: OnnxEngine(graph(), "cpu", threads=n), "int8", int8_prepare_s))
    else:
        engines += [
            ("torch", capped(lambda: torch_engine(model, device, copy_net=True, **options)), None, 0.0),
            ("onnx", onnx(False, None), "onnx", plain_cost),
        ]
    if compiled and translator:
        engines.append(("compiled", capped(lambda: open_compiled(model, device, **options)), "compiled", COMPILE_S))
    candidates = []
    # Every engine at the runtime's own thread count first, then the capped variants: where only a few fit the
    # budget, a different engine is likelier to win than the same engine on fewer threads.
    for count in threads if threads is not None else thread_counts(device):
        for name, opener, prepare, prepare_s in engines:
            label = f"{name}@{count}" if count else name
            candidates.append(Candidate(label, lambda opener=opener, count=count: opener(count), prepare, prepare_s))
    return candidates


def affordable(candidates: Sequence[Candidate], seconds_per_run: float, measure_s: float, prepare_s: float) -> tuple[
    list[Candidate], list[Candidate]
]:  # fmt: skip
    """(the candidates whose measuring and one-time preparation fit, the others), in order, the first always in.

    Each candidate measured costs about three runs (a warm-up, a timed run, the warm reopen); one-time artefacts
    (exports, compiles) count once however many thread-count variants share them.
    """
    chosen, left, runs, prepared, spent = [], [], 0.0, set(), 0.0
    for index, candidate in enumerate(candidates):
        extra = 0.0 if candidate.prepare in prepared or candidate.prepare is None else candidate.prepare_s
        more_runs = 3 * seconds_per_run if index else 0.0  # the first one is the default: its runs are the job's
        if index == 0 or (runs + more_runs <= measure_s and spent + extra <= prepare_s):
            chosen.append(candidate)
            runs, spent = runs + more_runs, spent + extra
            prepared.add(candidate.prepare)
        else:
            left.append(candidate)
    return chosen, left

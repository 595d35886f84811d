"""Batch jobs over several processes and machines: under torchrun (RANK of WORLD_SIZE, any number of nodes) or
`--nproc N`, each process takes a disjoint share of the inputs, balanced by size. Every process computes the
same plan from the whole input list alone, so no process waits on another, and one that fails loses only its
unfinished files."""

from __future__ import annotations

import heapq
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from transgan.errors import TransganError


@dataclass(frozen=True)
class Shard:
    """This process's place: share `rank` of `count` (count 1: everything)."""

    rank: int = 0
    count: int = 1

    @property
    def active(self) -> bool:
        return self.count > 1

    def select(self, paths: Sequence[Path]) -> list[Path]:
        """This process's share of image files, balanced by pixel count (decode and model time follow it)."""
        return self._take(paths, image_weight)

    def select_files(self, paths: Sequence[Path]) -> list[Path]:
        """This process's share of other files (videos), balanced by file size."""
        return self._take(paths, file_weight)

    def _take(self, paths: Sequence[Path], weight: Callable[[Path], int]) -> list[Path]:
        if not self.active:
            return list(paths)
        mine = set(share_plan([weight(path) for path in paths], self.count)[self.rank])
        return [path for index, path in enumerate(paths) if index in mine]


def current_shard() -> Shard:
    """The share torchrun (or `--nproc`) gives this process through RANK and WORLD_SIZE; all when unset."""
    try:
        count = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as error:
        raise TransganError(f"RANK / WORLD_SIZE must be integers ({error})") from error
    if count < 1 or not 0 <= rank < count:
        raise TransganError(f"RANK {rank} of WORLD_SIZE {count}: the rank must be in 0..WORLD_SIZE-1")
    return Shard(rank, count)


def shard_device(device: str, shard: Shard) -> str:
    """One GPU per process on a machine: 'auto'/'cuda' become cuda:LOCAL_RANK (modulo the GPUs there)."""
    from transgan.inference.engines import resolve_device

    resolved = resolve_device(device)
    if shard.active and resolved == "cuda":
        import torch

        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(torch.cuda.device_count(), 1)}"
    return resolved


def open_shared_choice(
    model: str | Path, device: str, direction: str | None, test_time: str | None, sample: Any, images: int
) -> tuple[Any, int | None]:
    """`--engine auto` in one of several processes: the engine and batch size a single-process run measured and
    cached for this model and machine, else the default engine with the caller's batch size. It never measures:
    processes measuring side by side would time each other and could choose differently, and then their
    outputs would not be the ones one process writes. Returns (engine, batch size or None)."""
    from transgan.inference.autotune import open_auto

    # A measuring budget of 0: the cached choice (found under the same key as one process's), else the default.
    return open_auto(model, device, direction, test_time, sample, images, budget_s=0.0)


def share_plan(weights: Sequence[int], count: int) -> list[list[int]]:
    """Indices of the items each of `count` processes takes: heaviest first, each to the least loaded process
    (ties: the lower rank), so shares differ by at most one item's weight. Depends on the weights alone."""
    order = sorted(range(len(weights)), key=lambda index: (-weights[index], index))
    loads = [(0, rank) for rank in range(count)]
    shares: list[list[int]] = [[] for _ in range(count)]
    for index in order:
        load, rank = heapq.heappop(loads)
        shares[rank].append(index)
        heapq.heappush(loads, (load + max(weights[index], 1), rank))
    return [sorted(share) for share in shares]


def image_weight(path: Path) -> int:
    """Width x height from the image header (no decode); the file size when the header cannot be read (the
    process that gets it reports it)."""
    try:
        with Image.open(path) as image:
            return image.width * image.height
    except Exception:  # unreadable inputs still need a deterministic owner
        return file_weight(path)


def file_weight(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_shards(count: int, argv: list[str], say: Callable[[str], None], together: bool = False) -> int:
    """`transgan ARGV` in `count` processes on this machine, process i with RANK=i of WORLD_SIZE=count and an
    equal share of the cores. They run independently: one that fails does not stop the others, unless
    `together` (processes that wait for each other's results), where the others are stopped too. Returns the
    exit status to give (130 interrupted, 2 an error, 1 unreadable inputs, else 0)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TransganError("--nproc inside a torchrun job: use either torchrun or --nproc, not both")
    threads = str(max(1, (os.cpu_count() or 1) // count))
    children = []
    for rank in range(count):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(count), "LOCAL_RANK": str(rank)}
        env["LOCAL_WORLD_SIZE"] = str(count)
        env.setdefault("OMP_NUM_THREADS", threads)
        children.append(subprocess.Popen([sys.executable, "-m", "transgan", *argv], env=env))
    try:
        while together and all(child.poll() in (None, 0) for child in children):
            if all(child.poll() == 0 for child in children):
                break
            time.sleep(0.2)
        if together:  # one failed: the others would wait for its share forever; what they finished is kept
            for child in children:
                if child.poll() is None:
                    child.terminate()
        codes = [child.wait() for child in children]
    except KeyboardInterrupt:  # the processes got the Ctrl-C too: they keep what they finished and stop
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        codes = [child.wait() for child in children]
    for rank, code in enumerate(codes):
        if code < 0:
            say(f"process {rank} of {count} was killed by signal {-code}; its finished outputs are kept")
        elif code not in (0, 1):
            say(f"process {rank} of {count} stopped with status {code}; its finished outputs are kept")
    # What the one command reports: Ctrl-C first, then an error (or a killed process), then unreadable inputs.
    if 130 in codes:
        return 130
    if any(code not in (0, 1) for code in codes):
        return 2
    return 1 if 1 in codes else 0


# -- feature extraction (transgan eval) -------------------------------------------------------------
def shared_features(
    files: list[Path],
    compute: Callable[[list[Path]], Any],
    shard: Shard,
    work_dir: Path,
    chunk: int,
    poll_s: float = 0.2,
) -> Any:
    """Features of `files` computed by all the processes together: each takes its share of chunks of `chunk`
    files (one batch: what a failed process loses at most; balanced by pixels), writes each chunk's arrays to
    `work_dir` (atomically; a rerun skips written chunks), waits for the others' and returns the whole in file
    order: an array, or a tuple of arrays like `compute`'s. The chunks stay in `work_dir` for reruns."""
    import numpy as np

    chunks = [files[start : start + chunk] for start in range(0, len(files), chunk)]
    plan = share_plan([sum(image_weight(path) for path in part) for part in chunks], shard.count)
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = [work_dir / f"chunk_{index:06d}.npz" for index in range(len(chunks))]
    for index in plan[shard.rank]:
        if paths[index].is_file():
            continue  # written by an earlier run that stopped before the end
        arrays = compute(chunks[index])
        arrays = arrays if isinstance(arrays, tuple) else (arrays,)
        partial = paths[index].with_name(f".{paths[index].stem}.{os.getpid()}.partial.npz")
        np.savez(partial, *arrays)
        os.replace(partial, paths[index])
    while not all(path.is_file() for path in paths):  # the others' shares (torchrun / --nproc stop all on failure)
        time.sleep(poll_s)
    loaded = []
    for path in paths:
        with np.load(path) as data:
            loaded.append([data[f"arr_{i}"] for i in range(len(data.files))])
    parts = tuple(np.concatenate(column) for column in zip(*loaded))
    return parts[0] if len(parts) == 1 else parts


def features_work_dir(folder: Path, files: list[Path], *identity: object) -> Path:
    """Where the chunks of one folder's features go: keyed by the files (names, sizes, times) and by what
    computes them (`identity`: extractor, mode, batch size), so a changed folder or extractor starts afresh."""
    import hashlib

    from transgan.models import cache_dir

    digest = hashlib.sha256(repr(identity).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return cache_dir() / "features" / digest.hexdigest()[:32]

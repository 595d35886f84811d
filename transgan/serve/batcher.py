"""Dynamic batching: concurrent requests with the same key run as one engine call, on one engine thread."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# run_batch(key, payloads) -> one result per payload, in order; called on the engine thread only.
RunBatch = Callable[[Hashable, list[Any]], list[Any]]


@dataclass
class _Item:
    payload: Any
    weight: int  # rows this item adds to the batch (a /generate request for n images weighs n)
    future: asyncio.Future
    arrived: float


@dataclass
class BatchStats:
    """What the batcher did: shown by GET /info, so batching can be seen working."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    sizes: Counter = field(default_factory=Counter)  # batch size in requests -> how many batches
    wait_seconds: float = 0.0  # summed over requests: arrival -> its batch starts
    run_seconds: float = 0.0  # summed over batches: engine time

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "rows": self.rows,
            "failed_batches": self.failed_batches,
            "mean_batch_size": round(self.requests / self.batches, 3) if self.batches else 0.0,
            "largest_batch": self.largest_batch,
            "batch_sizes": {str(size): count for size, count in sorted(self.sizes.items())},
            "mean_wait_ms": round(1000 * self.wait_seconds / self.requests, 2) if self.requests else 0.0,
            "mean_run_ms": round(1000 * self.run_seconds / self.batches, 2) if self.batches else 0.0,
        }


class DynamicBatcher:
    """Groups submitted items by key and runs each group as one batch of at most `max_batch` rows.

    A group runs when it is full or when its oldest item has waited `max_wait_ms`; groups run one at a time,
    oldest first, on a single engine thread, so the engine never runs two batches at once and requests that
    arrive while it is busy gather into the next batch. Items of different keys (image sizes) never mix.
    """

    def __init__(self, run_batch: RunBatch, max_batch: int = 8, max_wait_ms: float = 10.0):
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: must be at least 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms {max_wait_ms}: must be 0 or more")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._groups: dict[Hashable, list[_Item]] = {}
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="engine")

    async def start(self) -> None:
        """Start the worker task on the running event loop."""
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def close(self) -> None:
        """Run what is queued, then stop: requests in flight get their answers."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._engine_thread.shutdown(wait=True)

    async def submit(self, key: Hashable, payload: Any, weight: int = 1) -> tuple[Any, int]:
        """Queue one item and wait for (its result, the number of requests in the batch it ran in)."""
        if self._closing or self._worker is None:
            raise RuntimeError("the batcher is not running")
        item = _Item(payload, weight, asyncio.get_running_loop().create_future(), time.monotonic())
        self._groups.setdefault(key, []).append(item)
        self._wakeup.set()
        return await item.future

    async def _work(self) -> None:
        while True:
            if not self._groups:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key = min(self._groups, key=lambda k: self._groups[k][0].arrived)  # oldest waiting request first
            await self._gather(key)
            batch = self._take(key)
            await self._run(key, batch)

    async def _gather(self, key: Hashable) -> None:
        """Wait until the group is full, its oldest item's deadline passes, or the service is closing."""
        deadline = self._groups[key][0].arrived + self.max_wait
        while not self._closing and self._rows(self._groups[key]) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self, key: Hashable) -> list[_Item]:
        group = self._groups[key]
        batch, rows = [], 0
        while group and (not batch or rows + group[0].weight <= self.max_batch):
            rows += group[0].weight
            batch.append(group.pop(0))
        if not group:
            del self._groups[key]
        return batch

    async def _run(self, key: Hashable, batch: list[_Item]) -> None:
        started = time.monotonic()
        stats = self.stats
        stats.requests += len(batch)
        stats.batches += 1
        stats.rows += self._rows(batch)
        stats.sizes[len(batch)] += 1
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.wait_seconds += sum(started - item.arrived for item in batch)
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._engine_thread, self.run_batch, key, [i.payload for i in batch])
        except Exception as error:  # one failed batch answers its own requests with the error, nothing else
            stats.failed_batches += 1
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            stats.run_seconds += time.monotonic() - started
        for item, result in zip(batch, results):
            if not item.future.done():  # the client may have gone away
                item.future.set_result((result, len(batch)))

    @staticmethod
    def _rows(items: list[_Item]) -> int:
        return sum(item.weight for item in items)

"""The training monitor: per-step values summed on the device (no sync in the hot loop), averaged over steps and
processes at each log, checked for NaN, written to the run log, and read back for health warnings."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from transgan import distributed
from transgan.errors import TransganError
from transgan.health import diagnose
from transgan.logs import RunLogger, read_metrics


class TrainingDiverged(TransganError):
    """A loss became NaN or infinite."""


class TrainingMonitor:
    """Accumulates the phases' losses and metrics between logs; logs their means with speed and rates."""

    def __init__(self, logger: RunLogger, device: torch.device, rank: int, world_size: int):
        self.logger, self.device, self.rank, self.world_size = logger, device, rank, world_size
        self._sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        self._counts: dict[str, int] = defaultdict(int)
        self._finite = torch.ones((), dtype=torch.bool, device=device)
        self.last_logged: dict[str, float] = {}
        self._since, self._since_images = time.perf_counter(), 0

    def add(self, values: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """One phase's values; `loss` is checked for NaN/inf (on the device, read at the next log)."""
        self._finite &= torch.isfinite(loss.detach())
        for key, value in values.items():
            self._sums[key] += value.detach().float()
            self._counts[key] += 1

    def count_images(self, images: int) -> None:
        self._since_images += images

    def finite(self) -> bool:
        """Every loss since the start was finite, on every process (all stop together, not only one)."""
        finite = bool(self._finite)
        if self.world_size > 1:
            finite = not distributed.any_process([not finite], self.device)[0]
        return finite

    def pop_means(self) -> dict[str, float]:
        """The means of the values added since the last call, over all processes; starts a new window."""
        keys = list(self._sums)  # the same keys in the same order on every process: they run the same phases
        means = torch.stack([self._sums[key] / self._counts[key] for key in keys]) if keys else torch.zeros(0)
        if self.world_size > 1 and keys:
            means = distributed.all_reduce_sum(means) / self.world_size  # the metrics of the global batch
        self._sums.clear()
        self._counts.clear()
        return dict(zip(keys, means.tolist()))

    def raise_if_diverged(self, step: int, latest: Callable[[], Path | None], networks: nn.Module | None) -> None:
        """TrainingDiverged when a loss (or, given `networks`, a weight) is NaN or infinite; `latest` names the
        last good checkpoint for the message."""
        finite = self.finite()
        if finite and networks is not None:
            finite = all(bool(torch.isfinite(p).all()) for p in networks.parameters())
        if not finite:
            kept = latest()
            kept = f"the last good checkpoint is {kept}" if kept else "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"a loss became NaN or infinite before step {step}; training stopped and {kept}. "
                "Lower the learning rate, use fp32, or enable --grad-clip"
            )

    def log(self, step: int, extra: dict[str, float]) -> dict[str, float]:
        """Means since the last log (over processes too), images/s and `extra`; returns what was logged."""
        values = self.pop_means()
        now = time.perf_counter()
        values["speed/images_per_s"] = self._since_images * self.world_size / max(now - self._since, 1e-9)
        self._since, self._since_images = now, 0
        values.update(extra)
        self.record(step, values)
        self.last_logged = values
        if self.rank == 0:
            for warning in diagnose(read_metrics(self.logger.metrics_path)[-10:]):
                print(f"warning (step {step}): {warning}")
        return values

    def record(self, step: int, values: dict[str, float]) -> None:
        """Write values that come from elsewhere (evaluations) to the run log."""
        self.logger.log(step, values)


def summary(values: dict[str, float]) -> str:
    """The losses of a log row, short, for the progress bar."""
    return " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in values.items() if k.startswith("loss/"))

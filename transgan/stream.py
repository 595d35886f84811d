"""The training batches as a pure function of (seed, step): epochs, per-process slices and the resolution
stages of growing networks (ProGAN, StyleGAN's schedule). A resumed run only needs the step."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from transgan.errors import TransganError
from transgan.sampler import ResumableSampler
from transgan.stopping import ignore_stop_signals_in_worker


@dataclass(frozen=True)
class Stage:
    """One stage of a growing network: its resolution, the images shown in it (the last stage goes on until
    the run ends), the first `fade_images` of which fade the new block in (alpha 0 -> 1), and optionally its
    own batch size (per process)."""

    resolution: int
    images: int
    fade_images: int = 0
    batch_size: int | None = None


def usable_workers(requested: int) -> int:
    """`requested` DataLoader workers, at most one per CPU this process may run on (taskset, cpusets, SLURM
    binding): more would only queue on those CPUs, and torch warns about them at every epoch."""
    if requested <= 0 or not hasattr(os, "sched_getaffinity"):  # macOS and Windows have no affinity call
        return max(requested, 0)
    return min(requested, len(os.sched_getaffinity(0)))


class BatchStream:
    """Batches in training order from any step; with stages, which stage and fade-in alpha a step has."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        stages: list[Stage] | None = None,
        worker_signals: tuple[int, ...] = (),
    ):
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.worker_signals = worker_signals  # signals data workers ignore: the main process decides on stops
        self.num_workers, self.pin_memory = usable_workers(num_workers), pin_memory
        self.stages = list(stages or [Stage(resolution=0, images=0)])
        self.batch_sizes = [stage.batch_size or batch_size for stage in self.stages]
        for size in self.batch_sizes:
            if len(dataset) // (size * world_size) == 0:
                raise TransganError(f"--batch-size {size} is larger than the dataset ({len(dataset)} items)")
        # Steps are counted in global batches (all processes), so N processes of batch B run the stages of one
        # process of batch N*B step for step.
        self.stage_steps = [math.ceil(s.images / (b * world_size)) for s, b in zip(self.stages, self.batch_sizes)]
        self.starts = [sum(self.stage_steps[:k]) for k in range(len(self.stages))]

    @property
    def staged(self) -> bool:
        return len(self.stages) > 1 or self.stages[0].images > 0

    @property
    def total_steps(self) -> int | None:
        """Steps to the end of the last stage (None without stages: the schedule decides)."""
        return sum(self.stage_steps) if self.staged else None

    def batches_per_epoch(self, stage: int = 0) -> int:
        return len(self.dataset) // (self.batch_sizes[stage] * self.world_size)

    def stage_at(self, step: int) -> tuple[int, float]:
        """(stage index, fade-in alpha) at `step`; past the last stage's images the last stage goes on."""
        index = max(k for k, start in enumerate(self.starts) if start <= step) if self.staged else 0
        stage = self.stages[index]
        if index == 0 or stage.fade_images <= 0:
            return index, 1.0
        fade_steps = math.ceil(stage.fade_images / (self.batch_sizes[index] * self.world_size))
        return index, min(1.0, (step - self.starts[index]) / fade_steps)

    def images_seen(self, step: int) -> int:
        """Images shown over all processes once `step` is done: each stage's steps at that stage's batch size."""
        index = self.stage_at(step)[0]
        earlier = sum(self.stage_steps[k] * self.batch_sizes[k] for k in range(index))
        return (earlier + (step - self.starts[index] + 1) * self.batch_sizes[index]) * self.world_size

    def loader(self, step: int) -> DataLoader:
        """The DataLoader of the stage `step` is in, positioned at `step`'s epoch and batch."""
        index = self.stage_at(step)[0]
        # Stage k > 0 draws its own data order (stage 0 keeps the order of a run without stages).
        sampler = ResumableSampler(
            len(self.dataset), self.batch_sizes[index], self.seed + 7_919 * index, True, self.rank, self.world_size
        )
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_sizes[index],
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,  # on CUDA: the copy to the GPU overlaps compute
            persistent_workers=self.num_workers > 0,  # workers live across the stage's epochs
            generator=torch.Generator(),  # its own: making an iterator must not draw from the global RNG
            worker_init_fn=partial(ignore_stop_signals_in_worker, self.worker_signals) if self.worker_signals else None,
        )
        self.position(loader, step)
        return loader

    def position(self, loader: DataLoader, step: int) -> None:
        """Point `loader` (of `step`'s stage) at `step`'s epoch and batch."""
        index = self.stage_at(step)[0]
        loader.sampler.set_position(*divmod(step - self.starts[index], loader.sampler.batches_per_epoch))

    def batches(self, step: int) -> Iterator[dict[str, Any]]:
        """Batches from `step` on, forever: epoch after epoch, stage after stage."""
        while True:
            index = self.stage_at(step)[0]
            next_stage = self.starts[index + 1] if index + 1 < len(self.stages) else None
            loader = self.loader(step)
            while step != next_stage:
                self.position(loader, step)
                for batch in loader:  # to the end of the epoch, or of the stage
                    yield batch
                    step += 1
                    if step == next_stage:
                        break

"""Data order as a pure function of (seed, epoch, position): exact resume and DDP sharding."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields (index, sample_seed) keys for one epoch, starting at any batch.

    The epoch's permutation and per-sample augmentation seeds come from a generator seeded with
    (seed, epoch), so a resumed run sees exactly the samples it would have seen. Each global batch of
    `batch_size * world_size` keys is split into contiguous per-rank slices: rank r of N processes
    gets the same samples as rows [r*B, (r+1)*B) of one process with the combined batch.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        # Incomplete last batches are dropped: batch norm and the DDP equal-work rule both want full batches.
        return self.dataset_size // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.dataset_size, generator=generator)
        else:
            order = torch.arange(self.dataset_size)
        sample_seeds = torch.randint(0, 2**62, (self.dataset_size,), generator=generator)
        global_batch = self.batch_size * self.world_size
        for batch in range(self.start_batch, self.batches_per_epoch):
            first = batch * global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                yield int(order[position]), int(sample_seeds[position])

"""Exponential moving averages of generator weights (the copies that sample grids and model files use)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def ramped_decay(decay: float, rampup: float, batch_size: int, images_seen: int) -> float:
    """StyleGAN2-ADA's EMA ramp-up: the average's half-life (in images: batch_size * ln 0.5 / ln decay) is at
    most `rampup` times the images seen so far, so the random early weights are forgotten quickly; the decay
    reaches `decay` once images_seen * rampup passes that half-life. rampup 0: `decay` from the start."""
    if rampup <= 0 or decay <= 0:
        return decay
    half_life = min(batch_size * math.log(0.5) / math.log(decay), max(images_seen * rampup, 1e-8))
    return 0.5 ** (batch_size / half_life)


class EMA:
    """Averaged copies of `names` in `networks`; empty (and free) when `decay` is 0. With `half_life_images` > 0
    the decay of an update is 0.5 ** (global batch / half-life), as StyleGAN2-ADA's ema_kimg; with `rampup` > 0
    it then follows `ramped_decay` for the images seen by then."""

    def __init__(
        self,
        networks: nn.ModuleDict,
        names: list[str],
        decay: float,
        rampup: float = 0.0,
        half_life_images: float = 0.0,
    ):
        self.decay, self.rampup, self.half_life_images = decay, rampup, half_life_images
        self.copies: dict[str, nn.Module] = {}
        if decay > 0:
            for name in names:
                self.copies[name] = copy.deepcopy(networks[name]).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, networks: nn.ModuleDict, names: list[str], batch_size: int = 1, images_seen: int = 0) -> None:
        """Move the copies of `names` toward the live weights; buffers (batch-norm statistics) are copied.
        `batch_size` and `images_seen` (over all processes, this step's included) matter only with ramp-up."""
        base = 0.5 ** (batch_size / self.half_life_images) if self.half_life_images > 0 else self.decay
        decay = ramped_decay(base, self.rampup, batch_size, images_seen)
        for name in names:
            if name in self.copies:
                live, average = networks[name], self.copies[name]
                torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - decay)
                for ema_buffer, buffer in zip(average.buffers(), live.buffers()):
                    ema_buffer.copy_(buffer)

    def follow_stage(self, networks: nn.ModuleDict) -> None:
        """Growing networks: put each copy at its live network's depth and fade-in alpha (not a buffer the
        update copies)."""
        for name, average in self.copies.items():
            if hasattr(average, "set_stage"):
                average.set_stage(networks[name].depth, networks[name].alpha)

    def or_live(self, networks: nn.ModuleDict, names: list[str]) -> dict[str, nn.Module]:
        """For each name, its EMA copy when there is one, else the live network."""
        return {name: self.copies.get(name, networks[name]) for name in names}

"""Exponential moving averages of generator weights (the copies that sample grids and model files use)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Averaged copies of `names` in `networks`; empty (and free) when `decay` is 0."""

    def __init__(self, networks: nn.ModuleDict, names: list[str], decay: float):
        self.decay = decay
        self.copies: dict[str, nn.Module] = {}
        if decay > 0:
            for name in names:
                self.copies[name] = copy.deepcopy(networks[name]).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, networks: nn.ModuleDict, names: list[str]) -> None:
        """Move the copies of `names` toward the live weights; buffers (batch-norm statistics) are copied."""
        for name in names:
            if name in self.copies:
                live, average = networks[name], self.copies[name]
                torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - self.decay)
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

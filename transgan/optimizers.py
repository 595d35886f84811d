"""The optimizers of a run: one Adam per optimizer name the phases give, shared by the phases that name it,
with StyleGAN2's lazy-regularisation corrections for an optimizer that a lazy phase steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.recipe import TrainingPlan
from transgan.tasks.base import Phase


@dataclass
class SharedOptimizer:
    """One optimizer and what the trainer needs to set its rate each step."""

    optimizer: torch.optim.Optimizer
    group: str  # the Recipe's learning-rate group ("G", "D")
    lr_ratio: float  # lazy regularisation: k/(k+1) of the group's rate; 1 otherwise

    def set_lr(self, plan: TrainingPlan, factor: float) -> float:
        """Apply the schedule's multiplier `factor` at this step; returns the rate set."""
        lr = plan.lr[self.group] * self.lr_ratio * factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


def lazy_ratio(phases: Sequence[Phase]) -> float:
    """k/(k+1) for the lazy phase among `phases` (all stepping one optimizer), 1.0 when none is lazy.

    With a regulariser run every k steps, main and regularisation steps of one optimizer make k+1 updates
    where an every-step regulariser makes k: the rate and the betas' time constants are scaled to match."""
    intervals = {phase.interval for phase in phases if phase.lazy and phase.interval > 1}
    if len(intervals) > 1:
        names = ", ".join(phase.name for phase in phases if phase.lazy)
        raise TransganError(
            f"phases {names} share an optimizer but are lazy at different intervals {sorted(intervals)}"
        )
    if not intervals:
        return 1.0
    k = intervals.pop()
    return k / (k + 1)


def build_optimizers(
    phases: Sequence[Phase],
    parameters: Callable[[Phase], list[nn.Parameter]],
    plan: TrainingPlan,
    eps: float,
    fused: bool,
) -> dict[str, SharedOptimizer]:
    """One Adam per optimizer name, over the parameters of the networks its phases step."""
    by_name: dict[str, list[Phase]] = {}
    for phase in phases:
        by_name.setdefault(phase.optimizer_name, []).append(phase)
    optimizers = {}
    for name, sharing in by_name.items():
        first = sharing[0]
        for other in sharing[1:]:
            if sorted(other.networks) != sorted(first.networks) or other.group != first.group:
                raise TransganError(
                    f"phases {first.name} and {other.name} share optimizer '{name}' but step different networks "
                    f"({first.networks} vs {other.networks}) or rate groups ({first.group} vs {other.group})"
                )
        ratio = lazy_ratio(sharing)
        betas = (plan.betas[0] ** ratio, plan.betas[1] ** ratio)
        adam = torch.optim.Adam(parameters(first), lr=plan.lr[first.group] * ratio, betas=betas, eps=eps, fused=fused)
        optimizers[name] = SharedOptimizer(adam, first.group, ratio)
    return optimizers

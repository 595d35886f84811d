"""Training recipes: a task's published defaults, merged with the user's options into one resolved plan
(learning rate per optimizer group, betas, batch size, schedule, EMA) before the trainer starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transgan.config import TrainConfig
from transgan.errors import TransganError


@dataclass(frozen=True)
class Recipe:
    """A task's defaults, as its paper or reference implementation publishes them.

    `lr` maps optimizer groups to rates; a `Phase` names its group ("G", "D"), so `--lr-g` and `--lr-d` set
    the rates of the "G" and "D" groups and `--lr` sets every group.
    """

    lr: dict[str, float] = field(default_factory=lambda: {"G": 2e-4, "D": 2e-4})
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 1
    epochs: int = 100  # at the initial learning rate
    decay_epochs: int = 0  # then a linear decay to 0 (policy "linear")
    lr_policy: str = "constant"
    ema: float = 0.0
    ema_rampup: float = 0.0  # StyleGAN2-ADA: 0.05 (see ema.ramped_decay)
    # StyleGAN2-ADA fixes the EMA's half-life in images (ema_kimg), not its decay per step: the decay then
    # follows the global batch, whatever --batch-size and the process count are. 0: use `ema` per step.
    ema_half_life_images: float = 0.0


@dataclass(frozen=True)
class TrainingPlan:
    """The recipe with the user's options applied: every value the trainer uses, none left open."""

    lr: dict[str, float]
    betas: tuple[float, float]
    batch_size: int
    epochs: int
    decay_epochs: int
    lr_policy: str
    ema: float
    ema_rampup: float
    ema_half_life_images: float = 0.0  # > 0: the decay per step follows the global batch (ema.EMA)


def resolve_plan(train: TrainConfig, recipe: Recipe) -> TrainingPlan:
    """Options given by the user win over the recipe; --lr sets every group unless --lr-g/--lr-d name one."""
    lr = dict(recipe.lr)
    if train.lr is not None:  # the reference's single --lr
        lr = {group: train.lr for group in lr}
    for group, value in (("G", train.lr_g), ("D", train.lr_d)):
        if value is not None:
            lr[group] = value
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return TrainingPlan(
        lr=lr,
        betas=(pick(train.beta1, recipe.betas[0]), pick(train.beta2, recipe.betas[1])),
        batch_size=pick(train.batch_size, recipe.batch_size),
        epochs=pick(train.epochs, recipe.epochs),
        decay_epochs=pick(train.decay_epochs, recipe.decay_epochs),
        lr_policy=pick(train.lr_policy, recipe.lr_policy),
        ema=pick(train.ema, recipe.ema),
        ema_rampup=pick(train.ema_rampup, recipe.ema_rampup),
        ema_half_life_images=recipe.ema_half_life_images if train.ema is None else 0.0,  # --ema: per step
    )


def lr_factor(policy: str, progress_epochs: float, epochs: int, decay_epochs: int, progress: float) -> float:
    """Learning-rate multiplier. `linear` is the reference's rule: constant for `epochs`, then a linear
    decay over `decay_epochs` (stepped per epoch); `cosine` follows the fraction `progress` of the run."""
    if policy == "constant":
        return 1.0
    if policy == "linear":
        return max(0.0, 1.0 - max(0, math.floor(progress_epochs) + 1 - epochs) / float(decay_epochs + 1))
    if policy == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise TransganError(f"--lr-policy {policy}: unknown; use constant, linear or cosine")


@dataclass(frozen=True)
class LRSchedule:
    """The learning-rate multiplier at each step. It depends on epochs only, never on --steps, so where a
    run stops (and resumes) does not change the rates it trains with."""

    policy: str
    epochs: int
    decay_epochs: int
    batches_per_epoch: int

    @property
    def steps(self) -> int:
        """Steps in the whole schedule (where `linear` reaches 0)."""
        return (self.epochs + self.decay_epochs) * self.batches_per_epoch

    def factor(self, step: int) -> float:
        """The multiplier of every group's base rate at `step`."""
        progress = step / self.steps if self.steps else 1.0
        return lr_factor(self.policy, step / self.batches_per_epoch, self.epochs, self.decay_epochs, progress)

"""Discriminator regularisers and augmentation that every task offers: lazy R1, WGAN-GP, minibatch std and
DiffAugment, with the scores (D/real, D/fake, D accuracy) every task logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from transgan.augment import DiffAugment
from transgan.config import option
from transgan.errors import TransganError
from transgan.losses import discriminator_accuracy, gradient_penalty, lazy_r1_loss


@dataclass(frozen=True)
class DiscriminatorOptions:
    """Options of the discriminator(s), the same for every task (a task may change a default)."""

    r1_gamma: float | None = option(
        None,
        "R1 penalty weight on real images, applied lazily every --r1-every steps; 0: off "
        "(default: the task's; stylegan: 0.0002 * image_size^2 / batch size, others off)",
    )
    r1_every: int = option(16, "lazy R1: regularise D every this many steps (StyleGAN2: 16)")
    gp_weight: float | None = option(
        None, "WGAN-GP gradient penalty weight (lambda); 0: off (default: 10 for Wasserstein losses, else off)"
    )
    mbstd_group_size: int = option(0, "minibatch-std layer in D over groups of this many images (ProGAN: 4); 0: none")
    diffaugment: str = option(
        "", "DiffAugment for real and fake images in both phases: a subset of color,translation,cutout"
    )


def check_discriminator_options(options: DiscriminatorOptions) -> None:
    """One error line for each value that cannot work."""
    if options.r1_gamma is not None and options.r1_gamma < 0:
        raise TransganError(f"--r1-gamma {options.r1_gamma}: must be 0 (off) or positive (StyleGAN2 at 32 px: 0.0064)")
    if options.r1_every < 1:
        raise TransganError(f"--r1-every {options.r1_every}: must be at least 1 (1: R1 every step)")
    if options.gp_weight is not None and options.gp_weight < 0:
        raise TransganError(f"--gp-weight {options.gp_weight}: must be 0 (off) or positive (WGAN-GP: 10)")
    if options.mbstd_group_size < 0:
        raise TransganError(f"--mbstd-group-size {options.mbstd_group_size}: must be 0 (none) or positive (4)")
    DiffAugment(options.diffaugment)  # an unknown operation raises one line naming the known ones


class DiscriminatorRegularizer:
    """The options applied to a task's discriminator passes.

    `discriminate(D, images, *extra)` is D as it sees images (DiffAugment'ed when a policy is set, the same way
    for reals and fakes, in both phases; differentiable, so G learns through it). `penalties` adds the
    gradient penalty every step and R1 on the steps divisible by --r1-every, both taken through the
    augmentation as StyleGAN2-ADA does. `scores` are the logged D/real, D/fake and D accuracies.
    """

    def __init__(
        self,
        options: DiscriminatorOptions,
        threshold: float = 0.0,
        default_r1_gamma: Callable[[int], float] | float = 0.0,
        default_gp_weight: float = 0.0,
    ):
        self.augment = DiffAugment(options.diffaugment)  # the task checked the options (check_discriminator_options)
        self.threshold = threshold
        self.r1_every = options.r1_every
        self._r1_gamma = default_r1_gamma if options.r1_gamma is None else options.r1_gamma
        self.gp_weight = default_gp_weight if options.gp_weight is None else options.gp_weight

    def r1_gamma(self, batch_size: int) -> float:
        """The R1 weight for a batch of this size (a default may follow the batch size, as StyleGAN2-ADA's)."""
        return float(self._r1_gamma(batch_size) if callable(self._r1_gamma) else self._r1_gamma)

    def view(self, images: Tensor) -> Tensor:
        """Images as D sees them: DiffAugment'ed when a policy is set, else as they are."""
        return self.augment(images) if self.augment else images

    def discriminate(self, D: Callable[..., Tensor], images: Tensor, *extra: Any) -> Tensor:
        return D(self.view(images), *extra)

    def penalties(
        self, D: Callable[..., Tensor], real: Tensor, fake: Tensor, step: int, *extra: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted penalties to add to D's loss at `step`, and their logged values."""
        seen = lambda images, *more: self.discriminate(D, images, *more)  # noqa: E731
        loss = torch.zeros((), device=real.device)
        metrics: dict[str, Tensor] = {}
        if self.gp_weight > 0:
            penalty = gradient_penalty(seen, real, fake, *extra)
            loss = loss + self.gp_weight * penalty
            metrics["D/gp"] = penalty.detach()
        gamma = self.r1_gamma(real.shape[0])
        if gamma > 0 and step % self.r1_every == 0:
            r1, _ = lazy_r1_loss(seen, real, *extra, gamma=gamma, every=self.r1_every)
            loss = loss + r1
            metrics["D/r1"] = r1.detach()
        return loss, metrics

    def scores(self, pred_real: Tensor, pred_fake: Tensor) -> dict[str, Tensor]:
        """D's mean outputs and its accuracy on reals and fakes (all elements of a PatchGAN map count)."""
        accuracy_real, accuracy_fake = discriminator_accuracy(pred_real, pred_fake, self.threshold)
        return {
            "D/real": pred_real.detach().float().mean(),
            "D/fake": pred_fake.detach().float().mean(),
            "D/accuracy_real": accuracy_real,
            "D/accuracy_fake": accuracy_fake,
        }

"""Discriminator regularisers and augmentation that every task offers: lazy R1, WGAN-GP, minibatch std,
DiffAugment and ADA, with the scores (D/real, D/fake, D accuracy, ADA's p and r_t) every task logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from transgan.ada import AdaController, augment
from transgan.augment import DiffAugment
from transgan.losses import discriminator_accuracy, gradient_penalty, lazy_r1_loss
from transgan.tasks.configs.shared import DiscriminatorOptions, check_discriminator_options  # noqa: F401 (re-exported)


class DiscriminatorRegularizer:
    """The options applied to a task's discriminator passes.

    `discriminate(D, images, *extra)` is D as it sees images (DiffAugment'ed when a policy is set, ADA'ed with
    --ada / --aug-p, the same way for reals and fakes, in both phases; differentiable, so G learns through it).
    `penalties` adds the gradient penalty every step and R1 on the steps divisible by --r1-every, both taken
    through the augmentation as StyleGAN2-ADA does. `scores` are the logged D/real, D/fake and D accuracies.

    With --ada, r_t counts D's predictions on reals (the main passes and R1's, as StyleGAN2-ADA's), and p moves
    at the end of every 4th step's discriminator loss (step numbers from `penalties`, which every task calls
    before `scores`). `state` / `load_state` hold p for exact resume; GANTask.extra_state saves them.
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
        self.ada: AdaController | None = None
        if options.ada or options.aug_p is not None:
            p = 0.0 if options.ada else options.aug_p
            self.ada = AdaController(p, adaptive=options.ada, target=options.ada_target, kimg=options.ada_kimg)
        self._step: int | None = None  # the step of the latest `penalties` call
        self._adjusted_at: int | None = None  # p moves once per 4th step, even with two discriminators

    def r1_gamma(self, batch_size: int) -> float:
        """The R1 weight for a batch of this size (a default may follow the batch size, as StyleGAN2-ADA's)."""
        return float(self._r1_gamma(batch_size) if callable(self._r1_gamma) else self._r1_gamma)

    def view(self, images: Tensor) -> Tensor:
        """Images as D sees them: ADA'ed or DiffAugment'ed when asked for, else as they are."""
        if self.ada is not None:
            return augment(images, self.ada.p)
        return self.augment(images) if self.augment else images

    def discriminate(self, D: Callable[..., Tensor], images: Tensor, *extra: Any) -> Tensor:
        return D(self.view(images), *extra)

    def penalties(
        self, D: Callable[..., Tensor], real: Tensor, fake: Tensor, step: int, *extra: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted penalties to add to D's loss at `step`, and their logged values."""
        self._step = step
        seen = lambda images, *more: self.discriminate(D, images, *more)  # noqa: E731
        loss = torch.zeros((), device=real.device)
        metrics: dict[str, Tensor] = {}
        if self.gp_weight > 0:
            penalty = gradient_penalty(seen, real, fake, *extra)
            loss = loss + self.gp_weight * penalty
            metrics["D/gp"] = penalty.detach()
        gamma = self.r1_gamma(real.shape[0])
        if gamma > 0 and step % self.r1_every == 0:
            r1, real_pred = lazy_r1_loss(seen, real, *extra, gamma=gamma, every=self.r1_every)
            if self.ada is not None:
                self.ada.observe(real_pred, self.threshold)
            loss = loss + r1
            metrics["D/r1"] = r1.detach()
        return loss, metrics

    def scores(self, pred_real: Tensor, pred_fake: Tensor) -> dict[str, Tensor]:
        """D's mean outputs and its accuracy on reals and fakes (all elements of a PatchGAN map count)."""
        accuracy_real, accuracy_fake = discriminator_accuracy(pred_real, pred_fake, self.threshold)
        scores = {
            "D/real": pred_real.detach().float().mean(),
            "D/fake": pred_fake.detach().float().mean(),
            "D/accuracy_real": accuracy_real,
            "D/accuracy_fake": accuracy_fake,
        }
        if self.ada is not None:
            scores["ada/p"] = self.ada.p.clone()  # the p this step's passes used
            scores["ada/rt"] = self.ada.observe(pred_real, self.threshold)
            step = self._step
            interval_ends = step is not None and (step + 1) % self.ada.interval == 0
            if self.ada.adaptive and interval_ends and self._adjusted_at != step:
                self.ada.adjust(pred_real.shape[0])
                self._adjusted_at = step
        return scores

    def state(self) -> dict[str, Tensor]:
        """Training state that is not a network parameter (ADA's p and its partial r_t sums)."""
        return self.ada.state() if self.ada is not None else {}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        if self.ada is not None:
            self.ada.load_state(tensors)


def regularizer_state(task: Any) -> dict[str, Tensor]:
    """The state of a task's `regularizer` (none when it has no DiscriminatorRegularizer)."""
    regularizer = getattr(task, "regularizer", None)
    return regularizer.state() if isinstance(regularizer, DiscriminatorRegularizer) else {}


def load_regularizer_state(task: Any, tensors: dict[str, Tensor]) -> None:
    regularizer = getattr(task, "regularizer", None)
    if isinstance(regularizer, DiscriminatorRegularizer):
        regularizer.load_state(tensors)

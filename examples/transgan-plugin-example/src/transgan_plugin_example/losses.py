"""`lsgan_symmetric`: least squares with targets a=-1 (fake), b=1 (real), c=0 (G), Mao et al. 2017, eq. 9.

Registered through a function entry point: transgan calls `register(LOSSES)`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class LeastSquaresABC:
    """D pulls real predictions to b and fake ones to a; G pulls fake predictions to c (the a-b-c coding)."""

    def __init__(self, a: float, b: float, c: float):
        self.a, self.b, self.c = a, b, c

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        # One-sided label smoothing moves the real target from b towards a by (1 - real_label).
        real_target = self.b - (1.0 - real_label) * (self.b - self.a)
        real_pred, fake_pred = real_pred.float(), fake_pred.float()
        loss_real = F.mse_loss(real_pred, torch.full_like(real_pred, real_target))
        loss_fake = F.mse_loss(fake_pred, torch.full_like(fake_pred, self.a))
        return loss_real, loss_fake

    def generator(self, fake_pred: Tensor) -> Tensor:
        fake_pred = fake_pred.float()
        return F.mse_loss(fake_pred, torch.full_like(fake_pred, self.c))


def register(registry: Any) -> None:
    """Entry point of group transgan.losses: add the loss as a ready instance (the tasks accept either)."""
    registry.add("lsgan_symmetric", LeastSquaresABC(a=-1.0, b=1.0, c=0.0))

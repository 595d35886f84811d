"""Adversarial losses, penalties and L1 terms against values computed by hand from their formulas.

Shapes, averaging over patch maps, finiteness, gradients and sign conventions of every registered loss
(plugins included) are in test_registry_models.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transgan.errors import TransganError
from transgan.losses import (
    adversarial_loss,
    cycle_loss,
    gradient_penalty,
    identity_loss,
    l1_loss,
    r1_penalty,
)
from transgan.registry import LOSSES

REAL = [2.0, -1.0, 0.5, 0.0]
FAKE = [-3.0, 1.0, 0.25, -0.5]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def bce(x: float, t: float) -> float:
    # -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]
    s = 1.0 / (1.0 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def close(tensor: torch.Tensor, expected: float) -> None:
    assert tensor.dim() == 0
    assert tensor.dtype == torch.float32
    assert tensor.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_registry_lists_all_losses():
    assert {"vanilla", "nonsaturating", "minimax", "lsgan", "hinge", "wasserstein"} <= set(LOSSES.names())


def test_vanilla():
    loss = adversarial_loss("vanilla")
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE))
    close(real, mean(bce(x, 1.0) for x in REAL))
    close(fake, mean(bce(x, 0.0) for x in FAKE))
    close(loss.generator(torch.tensor(FAKE)), mean(bce(x, 1.0) for x in FAKE))


def test_vanilla_equals_torch_bce_with_logits():
    torch.manual_seed(0)
    real, fake = torch.randn(3, 1, 5, 5), torch.randn(3, 1, 5, 5)
    criterion = nn.BCEWithLogitsLoss()
    loss_real, loss_fake = adversarial_loss("vanilla").discriminator(real, fake, real_label=0.9)
    torch.testing.assert_close(loss_real, criterion(real, torch.full_like(real, 0.9)))
    torch.testing.assert_close(loss_fake, criterion(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(adversarial_loss("vanilla").generator(fake), criterion(fake, torch.ones_like(fake)))


def test_nonsaturating():
    loss = adversarial_loss("nonsaturating")
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE))
    close(real, mean(softplus(-x) for x in REAL))
    close(fake, mean(softplus(x) for x in FAKE))
    close(loss.generator(torch.tensor(FAKE)), mean(softplus(-x) for x in FAKE))


def test_minimax_generator_is_log_one_minus_d():
    loss = adversarial_loss("minimax")
    expected = mean(math.log(1 - 1 / (1 + math.exp(-x))) for x in FAKE)
    close(loss.generator(torch.tensor(FAKE)), expected)
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE))
    close(real, mean(bce(x, 1.0) for x in REAL))
    close(fake, mean(bce(x, 0.0) for x in FAKE))


def test_lsgan():
    loss = adversarial_loss("lsgan")
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE))
    close(real, mean((x - 1) ** 2 for x in REAL))
    close(fake, mean(x**2 for x in FAKE))
    close(loss.generator(torch.tensor(FAKE)), mean((x - 1) ** 2 for x in FAKE))


def test_hinge():
    loss = adversarial_loss("hinge")
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE))
    close(real, mean(max(0.0, 1 - x) for x in REAL))
    close(fake, mean(max(0.0, 1 + x) for x in FAKE))
    close(loss.generator(torch.tensor(FAKE)), -mean(FAKE))


def test_wasserstein():
    loss = adversarial_loss("wasserstein")
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE))
    close(real, -mean(REAL))
    close(fake, mean(FAKE))
    close(loss.generator(torch.tensor(FAKE)), -mean(FAKE))


@pytest.mark.parametrize("name", ["vanilla", "nonsaturating", "minimax"])
def test_label_smoothing_changes_only_the_real_target(name):
    loss = adversarial_loss(name)
    real, fake = loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE), real_label=0.9)
    close(real, mean(bce(x, 0.9) for x in REAL))
    close(fake, mean(bce(x, 0.0) for x in FAKE))


def test_label_smoothing_lsgan():
    real, fake = adversarial_loss("lsgan").discriminator(torch.tensor(REAL), torch.tensor(FAKE), real_label=0.9)
    close(real, mean((x - 0.9) ** 2 for x in REAL))
    close(fake, mean(x**2 for x in FAKE))


@pytest.mark.parametrize("name", ["hinge", "wasserstein"])
def test_label_smoothing_refused_where_meaningless(name):
    with pytest.raises(TransganError, match="real_label"):
        adversarial_loss(name).discriminator(torch.tensor(REAL), torch.tensor(FAKE), real_label=0.9)


def test_half_precision_predictions_give_float32_losses():
    loss = adversarial_loss("nonsaturating")
    real, fake = loss.discriminator(torch.tensor(REAL).half(), torch.tensor(FAKE).half())
    close(real, mean(softplus(-x) for x in REAL))
    assert fake.dtype == torch.float32


def test_unknown_loss_name():
    with pytest.raises(TransganError, match="unknown loss 'wgan'.*hinge"):
        adversarial_loss("wgan")


class LinearD(nn.Module):
    """D(x) = sum(x * w) / scale over each sample: its input gradient is w / scale everywhere."""

    def __init__(self, w: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(w)
        self.scale = scale

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        out = (x * self.w).flatten(1).sum(1) / self.scale
        for e in extra:  # a conditioning input that shifts the output leaves the input gradient unchanged
            out = out + e.float()
        return out


def test_gradient_penalty_zero_for_unit_gradient_norm():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    D = LinearD(w, scale=w.norm().item())
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    penalty = gradient_penalty(D, real, fake, torch.arange(5))
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_closed_form_for_linear_d_and_trains_d():
    w = torch.full((1, 2, 2), 2.0)  # ||w|| = sqrt(4 * 4) = 4
    D = LinearD(w.clone())
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    penalty = gradient_penalty(D, real, fake)
    assert penalty.item() == pytest.approx((4.0 - 1.0) ** 2)
    # The gradient w.r.t. w is 2 (||w|| - 1) w / ||w|| = 2 * 3 * 2 / 4 = 3 per element: the graph was kept.
    penalty.backward()
    torch.testing.assert_close(D.w.grad, torch.full((1, 2, 2), 3.0))
    assert gradient_penalty(D, real, fake, center=0.0).item() == pytest.approx(16.0)


def test_r1_penalty_linear_d():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]]).view(1, 1, 2, 2)  # ||w||^2 = 1 + 4 + 0.25 + 9
    D = LinearD(w)
    real = torch.randn(4, 1, 2, 2).requires_grad_(True)
    penalty = r1_penalty(D(real), real)
    assert penalty.item() == pytest.approx(0.5 * 14.25)
    penalty.backward()
    torch.testing.assert_close(D.w.grad, w)  # d/dw 0.5 ||w||^2 = w


def test_r1_penalty_needs_grad_on_images():
    real = torch.randn(2, 1, 2, 2)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(real.sum(dim=(1, 2, 3)), real)


def test_l1_cycle_identity():
    a = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    b = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    expected = (1 + 0 + 2 + 0.5) / 4
    for fn in (l1_loss, cycle_loss, identity_loss):
        close(fn(a, b), expected)

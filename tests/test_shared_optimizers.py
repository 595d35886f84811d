"""Phases sharing an optimizer, lazy-regularisation corrections, non-finite gradients, frozen parameters and the
once-per-step EMA: the trainer capabilities StyleGAN2's Greg/Dreg and CUT's MLP heads rely on."""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer import TINY_NETS, quiet_config, write_images  # noqa: F401 (fixtures' helpers)

from transgan.errors import TransganError
from transgan.tasks.base import Phase
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer


@pytest.fixture
def trainer(tmp_path):
    write_images(tmp_path / "pairs" / "A", 4, seed=1)
    write_images(tmp_path / "pairs" / "B", 4, seed=2)
    config = Pix2PixConfig(data=str(tmp_path / "pairs"), **TINY_NETS)
    return build_trainer("pix2pix", config, quiet_config(tmp_path / "run", lr=0.01, beta1=0.5, beta2=0.9))


def first_weight(trainer):
    return next(trainer.task.networks["G"].parameters())


def square_loss(trainer, scale=1.0):
    """A loss on G's first weight only: its gradient is 2 * scale * w, easy to follow by hand."""
    return lambda: ((first_weight(trainer) ** 2).sum() * scale, {})


def adam_by_hand(w, grads, lr, betas, eps=1e-8):
    """torch.optim.Adam's update, written out, over a list of gradients (callables of w)."""
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t, grad in enumerate(grads, start=1):
        g = grad(w)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        w = w - lr[t - 1] * m_hat / (v_hat.sqrt() + eps)
    return w


def run_steps(trainer, steps):
    batch = next(iter(trainer.make_loader()))
    for step in range(steps):
        trainer.step = step
        trainer._train_step(batch)


def test_lazy_phase_shares_adam_with_corrected_rate_betas_and_weighted_loss(trainer):
    # Gmain every step, Greg every 2 steps (lazy): one Adam, lr * 2/3, betas ** (2/3), Greg's loss x 2.
    main = Phase("Gmain", ["G"], square_loss(trainer), "G", frozen=["D"], optimizer="G")
    reg = Phase("Greg", ["G"], square_loss(trainer, 0.5), "G", frozen=["D"], optimizer="G", interval=2, lazy=True)
    trainer.set_phases([main, reg])
    assert list(trainer.optimizers) == ["G"]
    ratio = 2 / 3
    group = trainer.optimizers["G"].param_groups[0]
    assert group["betas"] == pytest.approx((0.5**ratio, 0.9**ratio))
    w0 = first_weight(trainer).detach().clone()
    run_steps(trainer, 3)  # phases run: main, reg (step 0), main (1), main, reg (2)
    main_grad = lambda w: 2 * w  # noqa: E731
    reg_grad = lambda w: 2 * 0.5 * 2 * w  # noqa: E731  (x interval: the lazy weight)
    grads = [main_grad, reg_grad, main_grad, main_grad, reg_grad]
    expected = adam_by_hand(w0, grads, [0.01 * ratio] * 5, (0.5**ratio, 0.9**ratio))
    torch.testing.assert_close(first_weight(trainer).detach(), expected, rtol=1e-5, atol=1e-7)
    assert trainer.optimizers["G"].state[first_weight(trainer)]["step"].item() == 5  # one Adam state for both


def test_phases_without_a_shared_name_keep_their_own_optimizer(trainer):
    main = Phase("Gmain", ["G"], square_loss(trainer), "G", frozen=["D"])
    reg = Phase("Greg", ["G"], square_loss(trainer), "G", frozen=["D"], interval=2)
    trainer.set_phases([main, reg])
    assert set(trainer.optimizers) == {"Gmain", "Greg"}
    assert trainer.optimizers["Greg"].param_groups[0]["betas"] == (0.5, 0.9)  # not lazy: no correction


def test_sharing_an_optimizer_needs_the_same_networks(trainer):
    main = Phase("Gmain", ["G"], square_loss(trainer), "G", optimizer="shared")
    other = Phase("Dmain", ["D"], square_loss(trainer), "D", optimizer="shared")
    with pytest.raises(TransganError, match="share optimizer 'shared'"):
        trainer.set_phases([main, other])


def test_nonfinite_gradients_are_zeroed_when_the_phase_asks(trainer):
    def nan_loss():
        w = first_weight(trainer)
        return (w * torch.tensor(float("nan"))).sum() + (trainer.task.networks["G"].model[-2].weight ** 2).sum()

    trainer.set_phases([Phase("G", ["G"], lambda: (nan_loss(), {}), "G", frozen=["D"], zero_nonfinite_grads=True)])
    before = first_weight(trainer).detach().clone()
    run_steps(trainer, 1)
    assert torch.isfinite(first_weight(trainer)).all()
    assert torch.equal(first_weight(trainer).detach(), before)  # a zero gradient: Adam's first step leaves it
    trainer.set_phases([Phase("G", ["G"], lambda: (nan_loss(), {}), "G", frozen=["D"])])
    run_steps(trainer, 1)
    assert not torch.isfinite(first_weight(trainer)).all()  # without the option the NaN goes through


def test_ema_moves_once_per_step_when_two_phases_step_a_network(trainer):
    trainer.ema.decay = 0.5
    trainer.ema.copies["G"] = __import__("copy").deepcopy(trainer.task.networks["G"])
    main = Phase("Gmain", ["G"], square_loss(trainer), "G", frozen=["D"], optimizer="G")
    reg = Phase("Greg", ["G"], square_loss(trainer), "G", frozen=["D"], optimizer="G", lazy=True, interval=1)
    trainer.set_phases([main, reg])
    ema_before = next(trainer.ema.copies["G"].parameters()).detach().clone()
    run_steps(trainer, 1)
    live = first_weight(trainer).detach()
    torch.testing.assert_close(next(trainer.ema.copies["G"].parameters()).detach(), 0.5 * ema_before + 0.5 * live)


def test_frozen_parameters_stay_and_get_no_gradient(tmp_path, monkeypatch):
    write_images(tmp_path / "pairs" / "A", 4, seed=1)
    write_images(tmp_path / "pairs" / "B", 4, seed=2)
    config = Pix2PixConfig(data=str(tmp_path / "pairs"), **TINY_NETS)
    from transgan.tasks.pix2pix import Pix2PixTask

    frozen_layer = lambda task: list(task.networks["D"].parameters())[:2]  # noqa: E731
    monkeypatch.setattr(Pix2PixTask, "frozen_parameters", lambda self: frozen_layer(self))
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", lr=0.01))
    frozen = [p.detach().clone() for p in frozen_layer(trainer.task)]
    rest = [p.detach().clone() for p in list(trainer.task.networks["D"].parameters())[2:]]
    optimized = {id(p) for opt in trainer.optimizers.values() for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in frozen_layer(trainer.task))
    run_steps(trainer, 3)
    assert all(torch.equal(a, b) for a, b in zip(frozen, frozen_layer(trainer.task)))
    assert not all(torch.equal(a, b) for a, b in zip(rest, list(trainer.task.networks["D"].parameters())[2:]))
    assert not any(p.requires_grad for p in frozen_layer(trainer.task)), "the G phase's unfreeze skips them"


def test_lazy_ratio_rule():
    from transgan.optimizers import lazy_ratio

    noop = lambda: None  # noqa: E731
    assert lazy_ratio([Phase("a", ["G"], noop, "G"), Phase("b", ["G"], noop, "G", interval=16, lazy=True)]) == 16 / 17
    assert math.isclose(0.99 ** lazy_ratio([Phase("b", ["G"], noop, "G", interval=4, lazy=True)]), 0.99**0.8)
    with pytest.raises(TransganError, match="different intervals"):
        lazy_ratio(
            [Phase("a", ["G"], noop, "G", interval=2, lazy=True), Phase("b", ["G"], noop, "G", interval=4, lazy=True)]
        )

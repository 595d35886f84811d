"""The generator EMA through the real trainer: its weights after a few steps of a tiny cgan equal a hand
computation of the average (ramp-up off and on), and the model file holds exactly those weights."""

from __future__ import annotations

import math

import pytest
import torch
from test_cgan import SIZE, write_shapes
from test_trainer import quiet_config

import transgan
from transgan.tasks.cgan import CGANConfig
from transgan.train import build_trainer

BATCH, STEPS, DECAY = 2, 4, 0.9
RAMPUP = 0.5  # half-life at most half the images seen: decays 0.25, 0.5, 0.63, 0.71 over the 4 steps


def hand_decay(rampup: float, images_seen: int) -> float:
    """StyleGAN2-ADA's rule, written out: half-life (images) = min(batch ln 0.5 / ln decay, rampup * seen)."""
    half_life = BATCH * math.log(0.5) / math.log(DECAY)
    if rampup > 0:
        half_life = min(half_life, rampup * images_seen)
    return 0.5 ** (BATCH / half_life)


@pytest.mark.parametrize("rampup", [0.0, RAMPUP])
def test_ema_weights_equal_a_hand_computed_average(rampup, tmp_path):
    shapes = write_shapes(tmp_path / "shapes", per_class=4)
    config = CGANConfig(data=str(shapes), image_size=SIZE, latent_dim=8, ngf=4, ndf=4)
    train = quiet_config(tmp_path / "run", steps=STEPS, batch_size=BATCH, ema=DECAY, ema_rampup=rampup)
    trainer = build_trainer("cgan", config, train)
    G = trainer.task.networks["G"]
    names = [name for name, _ in G.named_parameters()]
    snapshot = lambda: {name: p.detach().double().clone() for name, p in G.named_parameters()}  # noqa: E731
    live = []  # G's weights after each step: taken when the next step's first phase starts, and after the last
    first_phase = trainer.phases[0]
    first_loss = first_phase.loss
    first_phase.loss = lambda: (live.append(snapshot()) if trainer.step > 0 else None, first_loss())[1]
    start = snapshot()  # the EMA copy starts as G at set-up
    path = trainer.fit()
    live.append(snapshot())
    assert len(live) == STEPS

    def hand_average(rampup: float) -> dict[str, torch.Tensor]:
        average = start
        for step, weights in enumerate(live):
            decay = hand_decay(rampup, images_seen=(step + 1) * BATCH)
            average = {name: decay * average[name] + (1 - decay) * weights[name] for name in names}
        return average

    expected, other = hand_average(rampup), hand_average(RAMPUP if not rampup else 0.0)
    if rampup:  # the early decays stay below DECAY: the random first weights are forgotten fast
        assert [hand_decay(rampup, (step + 1) * BATCH) for step in range(STEPS)] == [
            0.25,
            0.5,
            0.5 ** (2 / 3),
            0.5**0.5,
        ]
    # the test can tell ramp-up from none, and an average from the live weights, well above its tolerance
    assert max((expected[name] - other[name]).abs().max().item() for name in names) > 1e-5
    assert max((expected[name] - live[-1][name]).abs().max().item() for name in names) > 1e-5

    ema = dict(trainer.ema.copies["G"].named_parameters())
    for name in names:
        torch.testing.assert_close(ema[name].double(), expected[name], rtol=0, atol=1e-6, msg=name)
    written = dict(transgan.load(path).named_parameters())  # the model file holds the EMA copy
    for name in names:
        assert torch.equal(written[name], ema[name]), name


@pytest.mark.parametrize("batch_size", [2, 10])
def test_a_half_life_in_images_holds_whatever_the_batch(batch_size):
    # StyleGAN2-ADA's ema_kimg: the decay per step follows the global batch, so the half-life in images stays.
    from transgan.ema import EMA

    live = torch.nn.ModuleDict({"G": torch.nn.Linear(1, 1, bias=False)})
    torch.nn.init.zeros_(live["G"].weight)
    ema = EMA(live, ["G"], decay=0.5 ** (4 / 100), half_life_images=100)
    torch.nn.init.ones_(live["G"].weight)
    steps = 100 // batch_size  # 100 images shown, one half-life
    for _ in range(steps):
        ema.update(live, ["G"], batch_size=batch_size)
    assert ema.copies["G"].weight.item() == pytest.approx(0.5, rel=1e-6)


def test_the_stylegan_recipe_keeps_its_half_life_when_the_batch_changes():
    from types import SimpleNamespace

    from transgan.config import TrainConfig
    from transgan.recipe import resolve_plan
    from transgan.tasks.configs.stylegan import StyleGANConfig, apply_cfg
    from transgan.tasks.stylegan import StyleGANTask

    _, spec = apply_cfg(StyleGANConfig(data="unused"))
    recipe = StyleGANTask.recipe(SimpleNamespace(spec=spec))
    assert recipe.ema_half_life_images > 0
    plan = resolve_plan(TrainConfig(batch_size=3), recipe)
    assert plan.ema_half_life_images == recipe.ema_half_life_images
    assert resolve_plan(TrainConfig(ema=0.9), recipe).ema_half_life_images == 0  # --ema: a decay per step

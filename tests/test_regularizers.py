"""Discriminator options every task has: lazy R1 and WGAN-GP against hand values, minibatch std in every D,
DiffAugment in both phases, D accuracy logged, bad values as one line, and each task training with them."""

from __future__ import annotations

import pytest
import torch
from test_cgan import SIZE, write_shapes
from test_trainer import TINY_NETS, quiet_config, write_images
from torch import nn

from transgan.errors import TransganError
from transgan.logs import read_metrics
from transgan.nets import build_network
from transgan.tasks.cgan import CGANConfig
from transgan.tasks.cyclegan import CycleGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.tasks.progan import ProGANConfig
from transgan.tasks.regularizers import DiscriminatorOptions, DiscriminatorRegularizer
from transgan.tasks.stylegan import StyleGANConfig
from transgan.train import build_trainer

EVERYTHING = dict(r1_gamma=1.0, r1_every=2, gp_weight=1.0, mbstd_group_size=2, diffaugment="color,translation,cutout")


class LinearD(nn.Module):
    """D(x) = <w, x> per image: its input gradient is w everywhere, so R1 and the GP have closed forms."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x, labels=None):
        return (x * self.w).flatten(1).sum(1)


def test_lazy_r1_and_gradient_penalty_equal_hand_values():
    D = LinearD((1, 3, 4, 4))
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    squared_norm = D.w.detach().square().sum().item()
    regularizer = DiscriminatorRegularizer(DiscriminatorOptions(r1_gamma=0.5, r1_every=4, gp_weight=10.0))
    loss, logged = regularizer.penalties(D, real, fake, step=8)
    assert logged["D/r1"].item() == pytest.approx(0.5 * 4 * 0.5 * squared_norm, rel=1e-5)  # gamma * every * R1
    assert logged["D/gp"].item() == pytest.approx((squared_norm**0.5 - 1) ** 2, rel=1e-5)
    assert loss.item() == pytest.approx(logged["D/r1"].item() + 10.0 * logged["D/gp"].item(), rel=1e-5)
    loss.backward()
    assert D.w.grad is not None and D.w.grad.abs().sum() > 0  # the penalties train D
    _, off_step = regularizer.penalties(D, real, fake, step=9)
    assert "D/r1" not in off_step and "D/gp" in off_step  # R1 only every 4th step, the GP every step
    _, nothing = DiscriminatorRegularizer(DiscriminatorOptions()).penalties(D, real, fake, step=0)
    assert nothing == {}  # everything off by default


def test_task_defaults_turn_the_right_penalties_on():
    options = DiscriminatorOptions()
    assert DiscriminatorRegularizer(options, default_gp_weight=10.0).gp_weight == 10.0
    auto = DiscriminatorRegularizer(options, default_r1_gamma=lambda batch: 0.0002 * 32**2 / batch)
    assert auto.r1_gamma(32) == pytest.approx(0.0064)
    off = DiscriminatorRegularizer(DiscriminatorOptions(r1_gamma=0.0, gp_weight=0.0), 0.0, lambda b: 1.0, 10.0)
    assert off.r1_gamma(32) == 0.0 and off.gp_weight == 0.0  # 0 turns a task's default off


@pytest.mark.parametrize(
    "name, size, options",
    [
        ("basic", 64, dict(input_nc=3, ndf=4, norm="instance")),
        ("n_layers", 16, dict(input_nc=3, ndf=4, n_layers=2, norm="none")),
        ("dcgan_discriminator", 16, dict(num_classes=0, image_size=16, channels=3, ndf=4, norm="none")),
        ("projection_discriminator", 16, dict(num_classes=0, image_size=16, channels=3, ndf=4)),
    ],
)
def test_minibatch_std_lets_every_discriminator_see_the_batch(name, size, options):
    torch.manual_seed(0)
    plain = build_network(name, **options).eval()  # eval: spectral norm's power iteration stands still
    torch.manual_seed(0)
    with_std = build_network(name, mbstd_group_size=2, **options).eval()
    assert any(type(m).__name__ == "MinibatchStd" for m in with_std.modules())
    images = torch.randn(2, 3, size, size)
    other = images.clone()
    other[1] = torch.randn(3, size, size)  # change image 1 only
    with torch.no_grad():
        # Without the layer D judges image 0 alone; with it, image 0's score depends on its group.
        assert torch.allclose(plain(images)[0], plain(other)[0])
        assert not torch.allclose(with_std(images)[0], with_std(other)[0])


def test_diffaugment_reaches_d_in_both_phases(tmp_path):
    """pix2pix with --diffaugment translation: D's inputs differ from the plain pairs in the D and G phases."""
    write_images(tmp_path / "pairs" / "A", 4, seed=1)
    write_images(tmp_path / "pairs" / "B", 4, seed=2)
    config = Pix2PixConfig(data=str(tmp_path / "pairs"), diffaugment="cutout", **TINY_NETS)
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=1, batch_size=2))
    seen = []
    trainer.task.networks["D"].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    trainer.fit()
    task = trainer.task
    plain_real = torch.cat([task.real_A, task.real_B], 1)
    assert len(seen) == 3  # D phase: fake and real pairs; G phase: the fake pair
    for pair in seen:
        assert (pair == 0).float().mean() > 0.02  # a cutout square is zeroed (random pixels are never 0)
    assert not torch.equal(seen[1], plain_real)


def test_bad_values_are_one_line(tmp_path):
    for options, message in [
        (dict(r1_gamma=-1.0), "--r1-gamma -1.0: must be 0"),
        (dict(r1_every=0), "--r1-every 0: must be at least 1"),
        (dict(gp_weight=-2.0), "--gp-weight -2.0"),
        (dict(mbstd_group_size=-1), "--mbstd-group-size -1"),
        (dict(diffaugment="colour"), "unknown colour"),
    ]:
        with pytest.raises(TransganError, match=message):
            Pix2PixConfig(data="x", **options)  # before any data is read
        with pytest.raises(TransganError, match=message):
            build_trainer("cgan", CGANConfig(data=str(tmp_path / "nothing"), **options), quiet_config(tmp_path))


def _configs(tmp_path):
    shapes = write_shapes(tmp_path / "shapes", per_class=4, mode="RGB")
    write_images(tmp_path / "pairs" / "A", 4, seed=1)
    write_images(tmp_path / "pairs" / "B", 4, seed=2)
    write_images(tmp_path / "horses", 4, seed=3)
    write_images(tmp_path / "zebras", 4, seed=4)
    small = dict(image_size=SIZE, latent_dim=8, channel_base=64, channel_max=8)
    translation = {**TINY_NETS, "netd": "n_layers", "n_layers_d": 2, "norm": "instance"}
    return {
        "pix2pix": Pix2PixConfig(data=str(tmp_path / "pairs"), **translation, **EVERYTHING),
        "cyclegan": CycleGANConfig(
            domain_a=str(tmp_path / "horses"), domain_b=str(tmp_path / "zebras"), **translation, **EVERYTHING
        ),
        "cgan": CGANConfig(data=str(shapes), image_size=SIZE, latent_dim=8, ngf=4, ndf=4, d_norm="none", **EVERYTHING),
        "stylegan": StyleGANConfig(data=str(shapes), w_dim=8, **small, **EVERYTHING),
        "progan": ProGANConfig(data=str(shapes), stage_images=4, fade_images=2, **small, **EVERYTHING),
    }


@pytest.mark.parametrize("task", ["pix2pix", "cyclegan", "cgan", "stylegan", "progan"])
def test_every_task_trains_with_every_regulariser_and_logs_d_accuracy(task, tmp_path):
    config = _configs(tmp_path)[task]
    trainer = build_trainer(task, config, quiet_config(tmp_path / "run", steps=3, batch_size=2))
    trainer.fit()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    d_rows = [row for row in rows if "D/real" in row]
    assert d_rows, rows
    for row in d_rows:
        assert 0.0 <= row["D/accuracy_real"] <= 1.0 and 0.0 <= row["D/accuracy_fake"] <= 1.0
        assert row["D/gp"] >= 0.0
    assert [row["step"] for row in d_rows if "D/r1" in row] == [1, 3]  # lazy R1 at steps 0 and 2
    assert any(type(m).__name__ == "MinibatchStd" for name, net in trainer.task.networks.items() if "D" in name
               for m in net.modules())  # fmt: skip

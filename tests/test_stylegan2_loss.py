"""The stylegan task's phases against StyleGAN2-ADA's own StyleGAN2Loss (reference kit `loss_uncond32`): each
phase's loss through the task's phase functions with the kit's random draws fed in, every parameter gradient,
the path-length running mean and w_avg; R1's default gamma follows the global batch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import real_data_path

from transgan.convert.stylegan_pickle import load_official_state
from transgan.tasks.stylegan import StyleGANConfig, StyleGANTask

KIT = ("stylegan2_reference", "loss_uncond32")
# G_uncond32_skip + D_uncond32_resnet: z = w = 16, 2 mapping layers, channel_base 256, channel_max 16, mbstd 4.
NETS = dict(image_size=32, latent_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
NETS.update(conditional=False, conv_clamp=0.0, mbstd_group_size=4, r1_every=16, pl_every=4)


class Dataset:
    """What the task reads of a dataset: class names, channels, labels (the kit's phases need no images)."""

    class_names, channels, labels = ["all"], 3, [0]


class RecordedDraws:
    """The kit's fed draws in place of the task's generator: z's in call order, the crossover and uniform
    draw, the path-length noise."""

    def __init__(self, zs: list[torch.Tensor], mixing=None, pl_noise=None):
        self.zs, self.mixing_draw, self.pl_noise = list(zs), mixing, pl_noise

    def z(self, n: int) -> torch.Tensor:
        return self.zs.pop(0)[:n]

    def labels(self, n: int) -> None:
        return None

    def mixing(self, num_ws: int) -> tuple[int, float]:
        return self.mixing_draw

    def normal(self, n: int, *shape: int) -> torch.Tensor:
        assert self.pl_noise.shape == (n, *shape)
        return self.pl_noise


@pytest.fixture(scope="module")
def kit():
    root = real_data_path(*KIT)
    arrays = {p.stem: torch.from_numpy(np.load(p)) for p in root.glob("*.npy")}
    grads = {p.stem[len("grads_") :]: dict(np.load(p)) for p in root.glob("grads_*.npz")}
    values = json.loads((root / "values.json").read_text())
    states = {
        net: torch.load(root.parent / case / "state_dict.pth", weights_only=True)
        for net, case in (("G", "G_uncond32_skip"), ("D", "D_uncond32_resnet"))
    }
    return SimpleNamespace(arrays=arrays, grads=grads, values=values, states=states)


def task_for(kit, mixing_prob: float, r1_gamma: float) -> StyleGANTask:
    task = StyleGANTask(StyleGANConfig(**NETS, mixing_prob=mixing_prob, r1_gamma=r1_gamma), Dataset())
    for name in ("G", "D"):
        load_official_state(task.networks[name], kit.states[name], name).train()  # training mode, as the loop
    task.noise_mode = "const"  # the kit's deterministic synthesis noise
    task.pl_mean = torch.tensor(0.25)  # the kit's starting running mean
    task.forward({"image": kit.arrays["real_img"], "label": torch.zeros(4, dtype=torch.long)})
    return task


def draws_for(kit, phase: str) -> RecordedDraws:
    z = kit.arrays["gen_z"]
    if phase == "Gmain_stylemix":
        return RecordedDraws([z, kit.arrays["z_mix"]], mixing=(3, 0.5))
    return RecordedDraws([z], pl_noise=kit.arrays["pl_noise_randn"])


def run_phase(task: StyleGANTask, name: str) -> tuple[float, dict]:
    """One phase as the trainer runs it: only its network trains, its loss times the lazy gain back-propagated."""
    phase = next(p for p in task.phases() if p.name == name)
    for net_name, net in task.networks.items():
        net.requires_grad_(net_name in phase.networks)
        net.zero_grad(set_to_none=True)
    loss, metrics = phase.loss()
    (loss * (phase.interval if phase.lazy else 1)).backward()
    return float(loss.detach()), metrics


CASES = [  # (kit phase, task phase, style mixing, gamma)
    ("Gmain", "Gmain", 0.0, 0.0064),
    ("Greg", "Greg", 0.0, 0.0064),
    ("Dmain", "Dmain", 0.0, 0.0064),
    ("Dreg", "Dreg", 0.0, 0.0064),
    ("Dreg_gamma10", "Dreg", 0.0, 10.0),
    ("Gmain_stylemix", "Gmain", 0.9, 0.0064),
]


@pytest.mark.parametrize(("kit_phase", "phase", "mixing", "gamma"), CASES)
def test_phase_loss_and_every_gradient_equal_the_official(kit, kit_phase, phase, mixing, gamma):
    task = task_for(kit, mixing, gamma)
    task.new_draws = lambda name: draws_for(kit, kit_phase)
    loss, metrics = run_phase(task, phase)
    official = kit.values[kit_phase]
    assert loss * official["gain"] == pytest.approx(official["backward_scalar"], rel=1e-5)

    net = task.networks["G" if phase.startswith("G") else "D"]
    expected = kit.grads[kit_phase]
    ours = {name: p.grad for name, p in net.named_parameters()}
    assert sorted(ours) == sorted(expected)  # every parameter gets a gradient (zeros included), as official
    scale = max(float(np.abs(g).max()) for g in expected.values())
    for name, grad in expected.items():
        assert ours[name] is not None, name
        error = float((ours[name] - torch.from_numpy(grad)).abs().max())
        assert error <= 1e-4 * max(scale, 1.0) and error <= 1e-5 * scale + 1e-7, (name, error, scale)

    if phase == "Greg":
        assert float(task.pl_mean) == pytest.approx(official["pl_mean_after"], rel=1e-6)
        assert float(metrics["G/pl"]) == pytest.approx(np.mean(official["reports"]["Loss/pl_penalty"]), rel=1e-5)
    if phase == "Dreg":
        assert float(metrics["D/r1"]) == pytest.approx(np.mean(official["reports"]["Loss/D/reg"]), rel=1e-5)
    w_avg = kit.arrays.get(f"w_avg_after_{kit_phase}")
    if w_avg is not None:  # G in training mode moves w_avg in Gmain, Greg and Dmain
        torch.testing.assert_close(task.networks["G"].mapping.w_avg, w_avg, rtol=0, atol=1e-6)


def test_r1_gamma_follows_the_global_batch(kit):
    task = task_for(kit, 0.0, None)
    one = task.r1_gamma(batch_size=8)  # 1 process, batch 8
    task.world_size = 2
    assert task.r1_gamma(batch_size=4) == one == pytest.approx(0.0002 * 32**2 / 8)  # 2 processes x 4
    task.world_size = 8
    assert task.r1_gamma(batch_size=4) == pytest.approx(0.0064)  # the kit's 32 px at global batch 32

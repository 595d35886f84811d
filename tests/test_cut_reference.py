"""CUT and FastCUT against arrays the official code produced (../shared/data/cut_reference): generators and
their encoder features, the MLP heads, PatchNCE, and three training iterations run by the real trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import real_data_path
from PIL import Image

from transgan.config import TrainConfig
from transgan.losses import patch_nce_loss
from transgan.nets import build_network
from transgan.nets.patch_sample import PatchSampleF
from transgan.tasks.cut import CUTConfig, FastCUTConfig
from transgan.train import build_trainer

LAYERS = [0, 4, 8, 12, 16]
GENERATOR_CASES = {  # case -> (ngf, antialias, antialias_up)
    "G_resnet9_ngf16": (16, True, True),
    "G_resnet9_ngf8_no_antialias": (8, False, True),
    "G_resnet9_ngf8_no_antialias_up": (8, True, False),
}
# Official losses -> what transgan's phases return: the phase total or one of its logged parts.
LOSS_NAMES = {
    "D": ("D", None),
    "D_real": ("D", "D/loss_real"),
    "D_fake": ("D", "D/loss_fake"),
    "G": ("G", None),
    "G_GAN": ("G", "G/gan"),
    "NCE": ("G", "G/nce"),
    "NCE_Y": ("G", "G/nce_idt"),
}


def close(yours, reference, tol: float) -> float:
    """The kit's rule |yours - reference| <= tol * max(1, max|reference|); returns the worst ratio (<= 1 passes)."""
    yours, reference = np.asarray(yours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return float(np.abs(yours - reference).max() / (tol * max(1.0, np.abs(reference).max())))


@pytest.fixture(scope="module")
def kit():
    folder = real_data_path("cut_reference")
    return lambda name: folder / name


def write_images(folder, count: int, size: int = 64) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((size, size, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")


def load_array(kit, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(kit(name)))


def reference_generator(kit, case: str) -> torch.nn.Module:
    ngf, antialias, antialias_up = GENERATOR_CASES[case]
    net = build_network("resnet_9blocks", ngf=ngf, antialias=antialias, antialias_up=antialias_up)
    net.load_state_dict(torch.load(kit(f"{case}.pth"), weights_only=True), strict=True)
    return net.eval()


@pytest.mark.parametrize("case", list(GENERATOR_CASES))
def test_generator_outputs_and_encoder_features(kit, case):
    net, x = reference_generator(kit, case), load_array(kit, "input_real_A_64.npy")
    with torch.no_grad():
        assert close(net(x), np.load(kit(f"{case}.eval_output.npy")), 1e-5) <= 1
        features = net.encode(x, LAYERS)
    assert close(features[0], np.load(kit("feat_L0_reflectpad3_input_real_A_64.npy")), 1e-5) <= 1
    for layer, feature in zip(LAYERS[1:], features[1:]):
        assert close(feature, np.load(kit(f"{case}.feat_L{layer}.npy")), 1e-5) <= 1, layer


def test_mlp_heads_and_patch_nce_per_layer(kit):
    G = reference_generator(kit, "G_resnet9_ngf16")
    F = PatchSampleF(G.feature_widths(LAYERS), nc=32)  # built from the widths, not from a first batch
    F.load_state_dict(torch.load(kit("F_mlp_sample_nc32_p64.pth"), weights_only=True), strict=True)
    ids = list(load_array(kit, "F_mlp_sample_nc32_p64.patch_ids.npy"))
    with torch.no_grad():
        f_k = F(G.encode(load_array(kit, "input_real_A_64.npy"), LAYERS), ids)
        f_q = F(G.encode(load_array(kit, "input_target_64.npy"), LAYERS), ids)
    values = json.loads(kit("nce_G_resnet9_ngf16_b2.values.json").read_text())
    for i, layer in enumerate(LAYERS):
        assert close(f_k[i], np.load(kit(f"F_mlp_sample_nc32_p64.out_L{layer}.npy")), 1e-5) <= 1, layer
        assert close(f_q[i], np.load(kit(f"nce_G_resnet9_ngf16_b2.f_q_L{layer}.npy")), 1e-5) <= 1, layer
        loss = patch_nce_loss(f_q[i], f_k[i], batch_size=2, temperature=0.07)
        assert close(loss, np.load(kit(f"nce_G_resnet9_ngf16_b2.loss_vec_L{layer}.npy")), 1e-4) <= 1, layer
        assert close(loss.mean(), values["per_layer_mean"][f"L{layer}"], 1e-5) <= 1, layer
        pooled = patch_nce_loss(f_q[i], f_k[i], batch_size=1, temperature=0.07).mean()
        assert close(pooled, values["per_layer_mean_all_negatives_from_minibatch"][f"L{layer}"], 1e-5) <= 1


def replay_official_run(kit, tmp_path, case: str, dtype: torch.dtype):
    """Three steps of transgan's trainer from the kit's initial weights on its fixed batch, with the recorded
    flips and patch ids in place of the task's own draws. Returns (losses per step, final state)."""
    record = json.loads(kit(f"{case}.record.json").read_text())
    opt, batch_size = record["opt"], record["opt"]["batch_size"]
    write_images(tmp_path / "A", 2)  # the dataset is only built; the steps use the kit's batch
    write_images(tmp_path / "B", 2)
    config_class = CUTConfig if opt["CUT_mode"] == "CUT" else FastCUTConfig
    config = config_class(
        domain_a=str(tmp_path / "A"), domain_b=str(tmp_path / "B"), preprocess="none", load_size=64, crop_size=64,
        ngf=opt["ngf"], ndf=opt["ndf"], netf_nc=opt["netF_nc"], num_patches=opt["num_patches"],
    )  # fmt: skip
    train = TrainConfig(out=str(tmp_path / "run"), num_workers=0, progress=False, tensorboard=False)
    trainer = build_trainer(opt["CUT_mode"].lower(), config, train)
    task = trainer.task
    initial = np.load(kit("train_init_ngf8_ndf8_nc32.npz"))
    for name in ("G", "D", "F"):
        state = {key[2:]: torch.from_numpy(initial[key]) for key in initial.files if key.startswith(name + ".")}
        task.networks[name].load_state_dict(state, strict=True)
    task.networks.to(dtype)  # in place: the trainer's optimizers hold the same parameters

    flips = iter((record.get("flip_equivariance") or {}).get("flipped_per_iteration") or [False] * 3)
    ids = iter(torch.from_numpy(row) for step in np.load(kit(f"{case}.patch_ids.npy")) for call in step for row in call)
    task.draw_flip = lambda: next(flips)
    task.draw_patch_ids = lambda positions: next(ids)
    seen: dict[str, tuple] = {}
    for phase in trainer.phases:
        phase.loss = (lambda loss, name: lambda: seen.setdefault(name, loss()) and seen[name])(phase.loss, phase.name)
    batch = {
        "A": load_array(kit, "input_real_A_64.npy")[:batch_size].to(dtype),
        "B": load_array(kit, "input_real_B_64.npy")[:batch_size].to(dtype),
    }
    losses = []
    for step in range(3):
        seen.clear()
        trainer.step = step
        trainer._train_step(batch)
        values = {}
        for official, (phase, part) in LOSS_NAMES.items():
            if official in record["loss_names"] or official == "D":
                total, parts = seen[phase]
                values[official] = float((total if part is None else parts[part]).detach())
        losses.append(values)
    state = {
        f"{name}.{key}": value for name in ("G", "D", "F") for key, value in task.networks[name].state_dict().items()
    }
    return losses, state


CASES = ["train_cut_b1", "train_cut_b2", "train_fastcut_b1", "train_fastcut_b2"]


@pytest.mark.parametrize("case", CASES)
def test_three_float64_steps_match_the_official_float64_run(kit, tmp_path, case):
    losses, state = replay_official_run(kit, tmp_path, case, torch.float64)
    record = json.loads(kit(f"{case}.record.json").read_text())
    for step, (yours, official) in enumerate(zip(losses, record["losses_per_iteration_float64_run"])):
        for name, value in yours.items():
            assert close(value, official[name], 1e-5) <= 1, (step, name, value, official[name])
    if kit(f"{case}.after3_fp64run.npz").exists():  # the b2 cases keep their float64 weights
        after = np.load(kit(f"{case}.after3_fp64run.npz"))
        assert sorted(after.files) == sorted(state)
        worst = {key: close(state[key], after[key], 1e-5) for key in after.files}
        assert max(worst.values()) <= 1, max(worst.items(), key=lambda item: item[1])


@pytest.mark.parametrize("case", CASES)
def test_float32_first_step_losses_match_the_official_run(kit, tmp_path, case):
    losses, _ = replay_official_run(kit, tmp_path, case, torch.float32)
    official = json.loads(kit(f"{case}.record.json").read_text())["losses_per_iteration"][0]
    for name, value in losses[0].items():
        assert close(value, official[name], 1e-5) <= 1, (name, value, official[name])

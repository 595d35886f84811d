"""The model-file API (generator, info, one metadata builder) and test-time modes against the reference's way."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REAL_DATA
from torch import nn

import transgan
from transgan.checkpoint import ModelFile, model_meta, read_model
from transgan.convert import load_reference_checkpoint
from transgan.errors import TransganError
from transgan.inference.engines import open_engine
from transgan.nets import build_network
from transgan.nets import test_time as test_time_module

MANIFEST = REAL_DATA / "reference_checkpoints" / "manifest.json"
# Generator cases whose train-mode behaviour differs from eval mode: batch norm or dropout.
CASES = (
    sorted(
        name
        for name, case in json.loads(MANIFEST.read_text()).items()
        if case["kind"] == "G" and (case["norm"] == "batch" or case["dropout"])
    )
    if MANIFEST.is_file()
    else ["manifest"]
)


def reference_generator(real_data, name: str) -> tuple[nn.Module, torch.Tensor, np.ndarray]:
    """Case `name` converted into our network (dropout as the reference built it), its inputs, its eval output."""
    folder = real_data("reference_checkpoints")
    case = json.loads((folder / "manifest.json").read_text())[name]
    net = load_reference_checkpoint(folder / f"{name}.pth", case["netG"], dropout=case["dropout"])
    return net, torch.from_numpy(np.load(folder / case["input"])), np.load(folder / f"{name}.eval_output.npy")


def run_like_the_reference(net: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The reference's test.py without --eval: train() mode, one image at a time, here after a given seed."""
    training = net.training
    net.train()
    try:
        outputs = []
        for image in x:
            torch.manual_seed(seed)
            outputs.append(net(image[None]))
        return torch.cat(outputs)
    finally:
        net.train(training)


@pytest.mark.parametrize("name", CASES)
def test_reference_mode_equals_the_reference_run_per_image(real_data, name):
    net, x, eval_output = reference_generator(real_data, name)
    state = {key: value.clone() for key, value in net.state_dict().items()}
    side = max(net.size_multiple, 128)  # a crop keeps the ResNet cases fast; the U-Net needs 256 pixels
    with torch.no_grad():
        with test_time_module.test_time(net, "eval"):
            in_eval = net(x[:1]).numpy()
        x = x[:, :, :side, :side]
        expected = run_like_the_reference(net, x, seed=3)
        net.load_state_dict(state)  # train() mode moved the running statistics; ours must not
        with test_time_module.test_time(net, "reference", seed=3):
            batched = net(x)  # all images at once: per-image statistics, each its own masks' equal
            alone = net(x[1:])
            assert not net.training
        with test_time_module.test_time(net, "eval"):
            in_eval_cropped = net(x)
    assert x.shape[0] > 1
    assert (batched - expected).abs().max() <= 1e-5
    assert (alone - expected[1:]).abs().max() <= 1e-5
    assert (batched - in_eval_cropped).abs().max() > 1e-2  # the two modes do differ here
    assert np.abs(in_eval - eval_output[:1]).max() < 1e-4
    assert all(torch.equal(value, state[key]) for key, value in net.state_dict().items())


def test_batch_norm_statistics_per_image_at_any_batch_size():
    """No dropout: each image of a batch of 3 is normalised exactly as train-mode batch norm does it alone."""
    torch.manual_seed(0)
    net = build_network("unet_128", ngf=4, norm="batch", dropout=False, init_gain=0.3)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):  # running statistics far from any image's own
                module.running_mean.uniform_(-2, 2)
                module.running_var.uniform_(0.5, 3)
        x = torch.rand(3, 3, 128, 128) * 2 - 1
        expected = run_like_the_reference(net, x, seed=0)
        with test_time_module.test_time(net, "reference", seed=None):
            ours = net(x)
        with test_time_module.test_time(net, "eval"):
            in_eval = net(x)
    assert (ours - expected).abs().max() <= 1e-5
    assert (in_eval - expected).abs().max() > 1e-2


def test_dropout_masks_follow_the_seed_and_modes_come_back():
    torch.manual_seed(0)
    net = build_network("resnet_6blocks", ngf=4, norm="batch", dropout=True, init_gain=0.5)
    net.train()
    net.model[2].eval()  # a mixed state must come back as it was
    before = {name: module.training for name, module in net.named_modules()}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        with test_time_module.test_time(net, "reference", seed=5):
            first, again = net(x), net(x)
        with test_time_module.test_time(net, "reference", seed=6):
            other = net(x)
        with test_time_module.test_time(net, "reference", seed=5, dropout=False):
            without = net(x)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    assert (first - without).abs().max() > 1e-3
    assert {name: module.training for name, module in net.named_modules()} == before
    assert not any("forward" in vars(module) for module in net.modules())
    assert "dropout on, seed 5" in test_time_module.describe(net, "reference", 5)
    assert test_time_module.describe(net, "eval") == ""
    with pytest.raises(TransganError, match="test-time mode 'train': use reference or eval"):
        with test_time_module.test_time(net, "train"):
            pass


def tiny_translator() -> nn.Module:
    """A small U-Net with batch norm and dropout whose running statistics are those of a few images."""
    torch.manual_seed(0)
    net = build_network("unet_128", ngf=4, norm="batch", dropout=True, init_gain=0.3)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 128, 128) * 2 - 1)
    return net.eval()


def test_from_networks_holds_what_save_writes(tmp_path):
    nets = {"G_A": tiny_translator(), "G_B": tiny_translator()}
    kwargs = {"task": "cyclegan", "primary": "G_A", "directions": {"AtoB": "G_A", "BtoA": "G_B"}}
    live = ModelFile.from_networks(nets, **kwargs)
    written = read_model(transgan.save(nets, tmp_path / "m.safetensors", **kwargs))
    assert live.meta == written.meta == model_meta(nets, **kwargs)
    assert live.networks["G_A"] is nets["G_A"]
    assert live.test_time == "eval" and live.generator() == (nets["G_A"], "AtoB")
    assert live.generator("BtoA") == (nets["G_B"], "BtoA")
    with pytest.raises(TransganError, match="cannot translate BtoA; available directions: AtoB"):
        ModelFile.from_networks(nets["G_A"], task="pix2pix", directions={"AtoB": "G"}).generator("BtoA")
    with pytest.raises(TransganError, match="no network 'G_C'"):
        model_meta(nets, directions={"AtoB": "G_C"})
    with pytest.raises(TransganError, match="test-time mode 'train'"):
        model_meta(nets, test_time="train")


def test_info_of_a_translator_and_a_sampler():
    info = ModelFile.from_networks(tiny_translator(), task="pix2pix", directions={"BtoA": "G"}).info()
    assert (info.kind, info.arch, info.direction, info.test_time) == ("translator", "unet_128", "BtoA", "reference")
    assert (info.size_multiple, info.input_nc, info.output_nc) == (128, 3, 3)
    assert info.as_dict()["size_multiple"] == 128 and "latent_dim" not in info.as_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.kind = "sampler"
    sampler = build_network("dcgan_generator", latent_dim=8, num_classes=3, image_size=16, ngf=4)
    info = ModelFile.from_networks(sampler, task="cgan", class_names=["a", "b", "c"]).info()
    assert (info.kind, info.latent_dim, info.num_classes, info.image_size) == ("sampler", 8, 3, 16)
    assert info.class_names == ("a", "b", "c") and info.test_time == "eval" and info.direction is None
    with pytest.raises(TransganError, match="not a generator"):
        ModelFile.from_networks(build_network("pixel", ndf=4)).info()


def test_files_written_before_test_time_take_their_task_default(tmp_path):
    path = transgan.save(tiny_translator(), tmp_path / "old.safetensors", task="pix2pix", directions={"AtoB": "G"})
    model = read_model(path)
    del model.meta["test_time"]
    assert model.info().test_time == "reference"
    model.meta["task"] = "cyclegan"
    assert model.info().test_time == "eval"


def test_torch_engine_runs_the_model_file_mode_and_eval_on_request(tmp_path):
    net = tiny_translator()
    path = transgan.save(net, tmp_path / "p.safetensors", task="pix2pix", directions={"AtoB": "G"})
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32)
    with torch.no_grad():
        expected_eval = net(torch.from_numpy(x)).numpy()
        expected = run_like_the_reference(net, torch.from_numpy(x), seed=0).numpy()
    engine = open_engine(path, device="cpu")
    assert engine.info["test_time"] == "reference" and "dropout on, seed 0" in engine.describe()
    # channels_last convolutions round differently from the contiguous ones of the plain run.
    assert np.abs(engine.run(x) - expected).max() <= 1e-5
    in_eval = open_engine(path, device="cpu", test_time="eval")
    assert in_eval.info["test_time"] == "eval" and "reference" not in in_eval.describe()
    assert np.abs(in_eval.run(x) - expected_eval).max() <= 1e-5


def test_an_engine_lends_a_live_network_back_unchanged():
    from transgan.inference.engines import TorchEngine

    net = tiny_translator().train()
    info = ModelFile.from_networks(net, task="pix2pix", directions={"AtoB": "G"}).info().as_dict()
    with TorchEngine(net, info, "cpu", channels_last=False) as engine:
        engine.run(np.zeros((1, 3, 128, 128), np.float32))
        assert not net.training
    assert all(module.training for module in net.modules())
    assert not any("forward" in vars(module) for module in net.modules())


def test_engines_and_evaluation_do_not_import_onnx():
    code = (
        "import sys, transgan.inference.engines, transgan.evaluation;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')"
        " or m.startswith('transgan.export')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

"""Importing reference (pix2pix/CycleGAN) and GAN Compression checkpoints reproduces their outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REAL_DATA
from PIL import Image

import transgan
from transgan.convert import (
    convert_reference_state_dict,
    guess_reference_arch,
    load_gan_compression_checkpoint,
    load_reference_checkpoint,
)
from transgan.errors import TransganError
from transgan.nets import build_network

MANIFEST = REAL_DATA / "reference_checkpoints" / "manifest.json"
# Case names are needed at collection time; without the data one placeholder case skips (or fails in CI).
CASES = sorted(json.loads(MANIFEST.read_text())) if MANIFEST.is_file() else ["manifest"]


def reference_case(real_data, name: str) -> tuple[dict, torch.Tensor, np.ndarray]:
    """The manifest entry, the input batch and the reference's eval-mode output of case `name`."""
    folder = real_data("reference_checkpoints")
    case = json.loads((folder / "manifest.json").read_text())[name]
    x = torch.from_numpy(np.load(folder / case["input"]))
    if case.get("in_nc", x.shape[1]) == 2 * x.shape[1]:
        # pix2pix's conditional D sees an image pair; the case pairs each input with its mirror image.
        x = torch.cat([x, x.flip(-1)], 1)
    return case, x, np.load(folder / f"{name}.eval_output.npy")


@pytest.mark.parametrize("name", CASES)
def test_reference_case_reproduces_eval_output(real_data, name):
    case, x, expected = reference_case(real_data, name)
    arch = case.get("netG") or case["netD"]
    path = real_data("reference_checkpoints", f"{name}.pth")
    net = load_reference_checkpoint(path, arch)
    # Widths, channels and norm come from the tensor shapes alone.
    config = net.transgan_config
    assert config["ngf" if case["kind"] == "G" else "ndf"] == case.get("ngf", case.get("ndf"))
    assert config["norm"] == case["norm"].removesuffix("_legacy")
    assert config["input_nc"] == x.shape[1]
    if "n_layers" in case:
        assert config["n_layers"] == case["n_layers"]
    if "dropout" in config and "resnet" in arch:
        assert config["dropout"] == case["dropout"]
    assert sum(p.numel() for p in net.parameters()) == case["params"]
    assert not net.training
    with torch.no_grad():
        y = net(x).numpy()
    assert list(y.shape) == case["output_shape"]
    assert np.abs(y - expected).max() < 1e-4


@pytest.mark.parametrize("name", CASES)
def test_reference_arch_is_guessed_from_keys(real_data, name):
    case, _, _ = reference_case(real_data, name)
    state = torch.load(real_data("reference_checkpoints", f"{name}.pth"), weights_only=True)
    assert len(state) == case["n_tensors"]
    assert guess_reference_arch(state) == (case.get("netG") or case["netD"])


def test_legacy_instance_norm_running_stats_are_dropped(real_data):
    path = real_data("reference_checkpoints", "resnet_9blocks_instance_ngf16_legacy_running_stats.pth")
    state = torch.load(path, weights_only=True)
    assert any(key.endswith("running_mean") for key in state)
    net = load_reference_checkpoint(path, "resnet_9blocks")
    assert len(net.state_dict()) == 48
    assert not any("running" in key for key in net.state_dict())


def test_wrong_arch_gives_one_clear_line(real_data):
    path = real_data("reference_checkpoints", "unet_256_batch_ngf8.pth")
    with pytest.raises(TransganError) as error:
        load_reference_checkpoint(path, "resnet_9blocks")
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"{path} does not look like a resnet_9blocks with ngf 64: expected 48 tensors, found 82; try --arch unet_256"
    )


def test_explicit_options_win_and_wrong_ones_are_named(real_data):
    path = real_data("reference_checkpoints", "resnet_9blocks_instance_ngf16.pth")
    with pytest.raises(TransganError, match=r"with ngf 32: tensor 'model.1.weight' has shape \(16, 3, 7, 7\)"):
        load_reference_checkpoint(path, "resnet_9blocks", ngf=32)
    # Instance and no norm hold the same tensors, so an explicit choice is taken as given.
    assert load_reference_checkpoint(path, "resnet_9blocks", norm="none").transgan_config["norm"] == "none"


def test_data_parallel_prefix_and_missing_batch_counters_are_handled():
    torch.manual_seed(0)
    net = build_network("unet_128", ngf=4, norm="batch").eval()
    # Old (pre-0.4) BatchNorm checkpoints carry no num_batches_tracked; DataParallel prefixes `module.`.
    state = {f"module.{key}": value for key, value in net.state_dict().items() if "num_batches" not in key}
    converted = convert_reference_state_dict(state, "unet_128")
    assert converted.transgan_config["ngf"] == 4 and converted.transgan_config["norm"] == "batch"
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), converted(x))


def test_files_that_are_not_state_dicts(tmp_path):
    with pytest.raises(TransganError, match="no such file"):
        load_reference_checkpoint(tmp_path / "missing.pth", "resnet_9blocks")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TransganError, match="garbage.pth: not a"):
        load_reference_checkpoint(garbage, "resnet_9blocks")
    nested = tmp_path / "nested.pth"
    torch.save({"G": {"w": torch.zeros(1)}}, nested)
    with pytest.raises(TransganError, match="expected a state dict of tensors"):
        load_reference_checkpoint(nested, None)
    unknown = tmp_path / "unknown.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, unknown)
    with pytest.raises(TransganError, match="match no known network"):
        load_reference_checkpoint(unknown, None)


def to_model_input(path) -> torch.Tensor:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(image / 127.5 - 1).permute(2, 0, 1)[None]


def to_uint8(y: torch.Tensor) -> np.ndarray:
    return np.round((y[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).clip(0, 255).astype(np.uint8)


def test_gan_compression_checkpoint_reproduces_its_outputs(real_data, tmp_path):
    net = load_gan_compression_checkpoint(real_data("gan_compression_horse2zebra", "latest_net_G.pth"))
    assert net.transgan_arch == "mobile_resnet"
    assert net.transgan_config["channels"] == "16_16_32_16_32_32_16_16"
    assert sum(p.numel() for p in net.parameters()) == 356_867
    # The converted model survives our own model file unchanged.
    reloaded = transgan.load(transgan.save(net, tmp_path / "h2z.safetensors"))
    names = sorted(path.name for path in real_data("horse2zebra", "testA").glob("*.png"))
    assert len(names) == 50
    for name in names[::12]:  # 5 of the 50 keep the test fast
        x = to_model_input(real_data("horse2zebra", "testA", name))
        expected = np.asarray(Image.open(real_data("horse2zebra", "gan_compression_fake_B", name)).convert("RGB"))
        with torch.no_grad():
            y = net(x)
            assert torch.equal(y, reloaded(x))
        diff = np.abs(to_uint8(y).astype(np.int16) - expected.astype(np.int16))
        assert diff.mean() <= 1 and diff.max() <= 2, name


def test_gan_compression_wrong_channels_named(real_data):
    path = real_data("gan_compression_horse2zebra", "latest_net_G.pth")
    with pytest.raises(TransganError, match="with channels 16_16_32_16_32_32_16_32: tensor 'model.22.weight'"):
        load_gan_compression_checkpoint(path, channels="16_16_32_16_32_32_16_32")


def test_converted_generators_record_their_test_time_mode(real_data, tmp_path):
    """Reference generators run at test time as the reference's test.py runs them; GAN Compression's in eval mode.
    A U-Net's dropout has no tensors: it takes pix2pix's default (on) unless --no-dropout."""
    from transgan.cli.app import build_app
    from typer.testing import CliRunner

    from transgan.checkpoint import read_model

    runs = {
        "unet": [real_data("reference_checkpoints", "unet_256_batch_ngf8.pth")],
        "unet_plain": [real_data("reference_checkpoints", "unet_256_batch_ngf8.pth"), "--no-dropout"],
        "mobile": [real_data("gan_compression_horse2zebra", "latest_net_G.pth"), "--arch", "mobile_resnet"],
    }
    models, lines = {}, {}
    for name, (source, *options) in runs.items():
        out = tmp_path / f"{name}.safetensors"
        result = CliRunner().invoke(build_app(), ["convert", str(source), str(out), *options])
        assert result.exit_code == 0, result.output
        models[name], lines[name] = read_model(out), result.output
    assert models["unet"].info().test_time == "reference" and "test time: reference" in lines["unet"]
    assert "test time: eval" in lines["mobile"]
    assert models["unet"].primary.transgan_config["dropout"] is True
    assert models["unet_plain"].primary.transgan_config["dropout"] is False
    assert models["mobile"].info().test_time == "eval"

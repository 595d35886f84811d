"""A converted StyleGAN2-ADA generator goes where transgan's models go: `generate` writes the image the official
generate.py writes for a seed, `export` to ONNX (fp32 parity), `serve` answers /generate; and model files of
the earlier stylegan networks still load and give their images."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import real_data_path
from PIL import Image
from test_cgan import cli

import transgan
from transgan.nets import build_network

SNAPSHOT = ("stylegan2_reference", "snapshot_cond32", "network-snapshot.pkl")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("stylegan2") / "G_ema.safetensors"
    result = cli("convert", str(real_data_path(*SNAPSHOT)), str(out))
    assert result.exit_code == 0, result.output
    return out


def official_uint8(images: torch.Tensor) -> np.ndarray:
    """The official generate.py's rounding: (img * 127.5 + 128).clamp(0, 255).to(uint8), as HWC."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(("seed", "label", "psi"), [(0, 3, 1.0), (85, 7, 0.7)])
def test_same_seed_same_image_as_the_official_generate(converted, tmp_path, seed, label, psi):
    out = tmp_path / "out"
    result = cli("generate", str(converted), "--seed", str(seed), "--n", "1", "--class", str(label),
                 "--truncation", str(psi), "--noise-mode", "const", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(next(out.iterdir())).convert("RGB"))
    # What the official generate.py computes for --seeds S --class K --trunc PSI --noise-mode const.
    G = transgan.load(converted)
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.latent_dim))
    c = torch.zeros(1, G.num_classes)
    c[:, label] = 1
    with torch.no_grad():
        expected = official_uint8(G(z.float(), c, truncation_psi=psi, noise_mode="const"))[0]
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1  # one level at most


def test_written_pixels_round_like_the_official(tmp_path):
    from transgan.cli.generate import write_images

    images = torch.from_numpy(np.load(real_data_path("stylegan2_reference", "G_cond32_skip", "img_const.npy")))
    write_images(images, tmp_path / "kit", 8, None)
    written = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "kit").iterdir())])
    assert np.abs(written.astype(int) - official_uint8(images).astype(int)).max() <= 1


def test_onnx_export_parity_and_serve(converted, tmp_path):
    onnx_file = tmp_path / "G.onnx"
    result = cli("export", str(converted), str(onnx_file))
    assert result.exit_code == 0, result.output
    G = transgan.load(converted)
    z = G.sample_latent(3, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 9, 4])
    with torch.no_grad():
        expected = G(z, labels).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {names[0]: z.numpy(), names[1]: labels.numpy().astype(np.int64)})[0]
    assert np.abs(got - expected).max() <= 1e-4

    pytest.importorskip("uvicorn", reason="the optional extra `serve`")
    from test_serve import call, running

    from transgan.inference.engines import open_engine
    from transgan.serve.model import Limits, ServedModel

    engine = open_engine(str(onnx_file), engine="onnx", device="cpu")
    with running(ServedModel(engine, "stylegan2", Limits(max_samples=4)), max_batch=4) as port:
        body = json.dumps({"class": "9", "seed": 3, "n": 2})
        status, headers, png = call(port, "POST", "/generate", body, {"Content-Type": "application/json"})
        assert status == 200 and headers["x-images"] == "2", png
        info = json.loads(call(port, "GET", "/info")[2])
        body = json.dumps({"class": "9", "seed": 3, "n": 1})
        one = call(port, "POST", "/generate", body, {"Content-Type": "application/json"})[2]
    assert info["model"]["class_names"] == [str(k) for k in range(10)]
    grid = np.asarray(Image.open(io.BytesIO(png)))
    assert grid.shape[0] >= 32 and grid.shape[1] >= 64 and grid.std() > 10  # two distinct 32x32 samples
    # The same seed gives the same image as `transgan generate` (the official seed convention), computed apart.
    result = cli("generate", str(converted), "--seed", "3", "--n", "1", "--class", "9", "--out", str(tmp_path / "g"))
    assert result.exit_code == 0, result.output
    generated = np.asarray(Image.open(next((tmp_path / "g").iterdir())).convert("RGB")).astype(int)
    served = np.asarray(Image.open(io.BytesIO(one)).convert("RGB")).astype(int)[2:-2, 2:-2]  # the grid's border
    assert served.shape == generated.shape and np.abs(served - generated).max() <= 1


def test_model_files_of_the_earlier_stylegan_networks_still_load(tmp_path):
    torch.manual_seed(0)
    old = build_network("stylegan_generator", image_size=16, latent_dim=8, w_dim=8, channel_base=64,
                        channel_max=8, mapping_layers=2, num_classes=3).eval()  # fmt: skip
    z, labels = old.sample_latent(2, torch.Generator().manual_seed(1)), torch.tensor([0, 2])
    with torch.no_grad():
        before = old(z, labels, truncation_psi=0.7)
    path = transgan.save({"G": old}, tmp_path / "old.safetensors", task="stylegan", class_names=["a", "b", "c"])
    loaded = transgan.load(path)
    assert type(loaded).__name__ == "StyleGANGenerator" and loaded.transgan_arch == "stylegan_generator"
    with torch.no_grad():
        assert torch.equal(loaded(z, labels, truncation_psi=0.7), before)
    result = cli("generate", str(path), "--class", "b", "--n", "2", "--out", str(tmp_path / "old.png"))
    assert result.exit_code == 0, result.output

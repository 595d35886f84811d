"""Class-conditional generation: architectures and losses train, generate, round-trip; errors; the shipped model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from transgan.checkpoint import read_model, save
from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.models import open_model
from transgan.nets import build_network
from transgan.tasks.cgan import CGANConfig, class_index, generate, interpolate
from transgan.train import build_trainer

SIZE = 16


def write_shapes(root: Path, per_class: int = 8, mode: str = "L") -> Path:
    """root/circle/*.png and root/square/*.png: white shapes of varying size and place on black."""
    for name in ("circle", "square"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new(mode, (SIZE, SIZE))
            draw = ImageDraw.Draw(image)
            a, b = 2 + i % 3, 13 - i % 2
            (draw.ellipse if name == "circle" else draw.rectangle)([a, a, b, b], fill="white")
            image.save(root / name / f"{i}.png")
    return root


@pytest.fixture
def shapes(tmp_path) -> Path:
    return write_shapes(tmp_path / "shapes")


def train_few(data: Path | str, out: Path, steps: int = 2, **options) -> Path:
    config = CGANConfig(data=str(data), image_size=SIZE, ngf=8, ndf=8, latent_dim=16, **options)
    train = TrainConfig(
        out=str(out), steps=steps, batch_size=4, num_workers=0, progress=False, tensorboard=False, device="cpu"
    )
    return build_trainer("cgan", config, train).fit()


VARIANTS = {
    "cbn-hinge": {"arch": "cbn"},
    "cbn-wgan-gp": {"arch": "cbn", "loss": "wgan-gp"},
    "cbn-acgan": {"arch": "cbn", "projection": False, "aux_weight": 1.0, "loss": "nonsaturating"},
    "cbn-infogan": {"arch": "cbn", "info_categorical": 3, "info_continuous": 2, "loss": "lsgan"},
    "dcgan-vanilla": {},  # the default arch and loss
    "dcgan-mode-seeking": {"arch": "dcgan", "loss": "vanilla", "real_label": 0.9, "mode_seeking": 1.0},
    "dcgan-wgan-gp": {"arch": "dcgan", "loss": "wgan-gp"},
    "dcgan-uncond": {"arch": "dcgan", "conditional": False},
    "cbn-uncond-wgan-gp": {"arch": "cbn", "conditional": False, "loss": "wgan-gp", "n_critic": 2},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_trains_and_generates(variant, shapes, tmp_path):
    path = train_few(shapes, tmp_path / "run", **VARIANTS[variant])
    model = read_model(path)
    G = model.primary
    conditional = VARIANTS[variant].get("conditional", True)
    assert model.class_names == (["circle", "square"] if conditional else [])
    assert model.meta["task"] == "cgan" and model.meta["extra"]["image_size"] == SIZE
    images = generate(G, [1] if conditional else None, n=3, seed=1)
    assert images.shape == (3, 1, SIZE, SIZE) and images.abs().max() <= 1
    assert torch.equal(images, generate(G, [1] if conditional else None, n=3, seed=1))  # seeded
    strip = interpolate(G, 0 if conditional else None, 1 if conditional else None, steps=4, rows=2)
    assert strip.shape == (8, 1, SIZE, SIZE)


@pytest.mark.parametrize("name", ["dcgan_generator", "cbn_generator"])  # cgan's generators (its arch table)
def test_samplers_sizes_and_channels(name):
    for size, channels in ((28, 1), (32, 3), (64, 3)):
        G = build_network(name, num_classes=4, image_size=size, channels=channels, ngf=4, latent_dim=8).eval()
        out = G(G.sample_latent(2), torch.tensor([0, 3]))
        assert out.shape == (2, channels, size, size)


def test_discriminators_take_labels():
    for name in ("dcgan_discriminator", "projection_discriminator"):
        D = build_network(name, num_classes=3, image_size=32, channels=3, ndf=4)
        assert D(torch.randn(2, 3, 32, 32), torch.tensor([0, 2])).shape == (2,)


def test_bad_image_size_is_clear():
    with pytest.raises(TransganError, match="image_size 100"):
        build_network("cbn_generator", image_size=100)


def test_class_names_round_trip(tmp_path):
    G = build_network("cbn_generator", num_classes=3, image_size=SIZE, channels=3, ngf=4, latent_dim=8)
    path = save({"G": G}, tmp_path / "m.safetensors", task="cgan", class_names=["cat", "dog", "ölçek"])
    model = read_model(path)
    assert model.class_names == ["cat", "dog", "ölçek"]
    assert class_index(model.class_names, "dog") == 1 and class_index(model.class_names, "2") == 2
    with pytest.raises(TransganError, match="its classes: cat, dog, ölçek"):
        class_index(model.class_names, "horse")


def test_bad_data_errors(tmp_path, shapes):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TransganError, match="no class sub-folders"):
        train_few(empty, tmp_path / "r1")
    (shapes / "triangle").mkdir()
    with pytest.raises(TransganError, match="triangle"):
        train_few(shapes, tmp_path / "r2")
    with pytest.raises(TransganError, match="--data is required"):
        train_few("", tmp_path / "r3")
    with pytest.raises(TransganError, match="--arch"):
        train_few(tmp_path / "nowhere", tmp_path / "r4", arch="stylegan")
    with pytest.raises(TransganError, match="critic without batch norm"):
        train_few(write_shapes(tmp_path / "s2"), tmp_path / "r5", arch="dcgan", loss="wgan-gp", d_norm="batch")


def test_mixed_channels_error(tmp_path):
    root = write_shapes(tmp_path / "mixed")
    Image.new("RGB", (SIZE, SIZE), "red").save(root / "circle" / "red.png")
    with pytest.raises(TransganError):
        train_few(root, tmp_path / "run")


def cli(*args: str):
    from transgan.cli.app import build_app

    return CliRunner().invoke(build_app(), list(args))


def test_generate_cli_shipped_model(tmp_path):
    result = cli("generate", "mnist-cgan", "--class", "7", "--n", "16", "--out", str(tmp_path / "sevens.png"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "sevens.png") as grid:
        assert grid.size[0] > 28 * 8
    result = cli("generate", "mnist-cgan", "--class", "3", "--n", "5", "--out", str(tmp_path / "threes"))
    assert result.exit_code == 0, result.output
    assert min(p.name for p in (tmp_path / "threes").iterdir()) == "3_0000.png"
    assert len(list((tmp_path / "threes").iterdir())) == 5
    result = cli("generate", "mnist-cgan", "--interpolate", "--class", "1", "--class", "8", "--steps", "6",
                 "--out", str(tmp_path / "strip.png"))  # fmt: skip
    assert result.exit_code == 0, result.output


def test_generate_cli_unknown_class_lists_classes(tmp_path):
    result = cli("generate", "mnist-cgan", "--class", "seven", "--out", str(tmp_path / "x.png"))
    assert result.exit_code != 0
    assert isinstance(result.exception, TransganError)
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in str(result.exception)


@pytest.mark.realdata
def test_shipped_model_makes_the_requested_digits(real_data):
    """A tiny classifier trained for two epochs on 2,000 real digits must read the shipped model's samples
    as the requested class; a broken or label-shuffled model scores about 10%."""
    root = real_data("mnist")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from mnist_classifier import load_mnist, predict, train_classifier

    images, labels = load_mnist(0, 2000, root)
    judge = train_classifier(images, labels, epochs=2)
    G = open_model("mnist-cgan").primary
    requested = torch.arange(10).repeat_interleave(20)
    fakes = generate(G, list(range(10)), n=20, seed=123)
    predicted, _ = predict(judge, fakes)
    assert (predicted == requested).float().mean() > 0.85


def test_within_class_spread_sees_a_generator_that_ignores_its_noise():
    """Two classes, each a single repeated image: diverse across the batch, zero spread within each class."""
    from transgan.tasks.cgan import within_class_spread

    collapsed = torch.cat([torch.zeros(4, 1, 4, 4), torch.ones(4, 1, 4, 4)])
    labels = torch.tensor([0] * 4 + [1] * 4)
    assert collapsed.std(0).mean() > 0.5
    assert within_class_spread(collapsed, labels, 2) == 0
    varied = collapsed + torch.randn_like(collapsed)
    assert within_class_spread(varied, labels, 2) > 0.5


def test_shipped_model_varies_within_a_class():
    """64 samples of one class must differ: real MNIST digits of one class have a mean per-pixel std of about
    0.3; the first shipped model ignored its noise (0.013) while every sample was still the right digit."""
    from transgan.tasks.cgan import within_class_spread

    G = open_model("mnist-cgan").primary
    for k in (1, 7):
        samples = generate(G, [k], n=64, seed=0)
        assert within_class_spread(samples, None, 0) > 0.15, f"class {k}"


def test_mode_seeking_penalises_a_generator_that_ignores_its_noise(shapes, tmp_path):
    from transgan.tasks.cgan import mode_seeking_ratio

    z, z2 = torch.randn(6, 8), torch.randn(6, 8)
    same = torch.rand(6, 1, 4, 4)
    assert mode_seeking_ratio(same, same.clone(), z, z2) == 0  # collapsed: the penalty 1/ratio is huge
    moved = same + 0.5
    assert mode_seeking_ratio(same, moved, z, z2) == pytest.approx(0.5 / (z - z2).abs().mean().item())
    with pytest.raises(TransganError, match="--mode-seeking -1"):
        train_few(shapes, tmp_path / "run", mode_seeking=-1.0)


def test_run_from_before_cgan_had_ema_resumes_with_the_ema_started_from_its_weights(
    shapes, tmp_path, monkeypatch, capsys
):
    """cgan's recipe gained an EMA: a run written before that (no EMA copy in its checkpoint) still resumes."""
    from dataclasses import replace

    from transgan.tasks.cgan import CGANTask
    from transgan.train import resume

    with_ema = CGANTask.recipe
    monkeypatch.setattr(CGANTask, "recipe", lambda self: replace(with_ema(self), ema=0.0, ema_rampup=0.0))
    run = tmp_path / "old"
    config = CGANConfig(data=str(shapes), image_size=SIZE, ngf=8, ndf=8, latent_dim=16)
    train = TrainConfig(out=str(run), steps=2, checkpoint_every=2, batch_size=4, num_workers=0, progress=False,
                        tensorboard=False, device="cpu")  # fmt: skip
    build_trainer("cgan", config, train).fit()
    monkeypatch.setattr(CGANTask, "recipe", with_ema)
    path = resume(run, steps=4)
    assert "no EMA copy of G" in capsys.readouterr().out
    assert read_model(path).primary is not None

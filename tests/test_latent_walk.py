"""Walks between random latents: slerp in z, lerp in w (StyleGAN), as a PNG strip, an animated GIF or an MP4."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_cgan import cli
from test_stylegan import tiny_generator

import transgan
from transgan.errors import TransganError
from transgan.inference.sampling import generate, latent_walk, slerp


def test_slerp_ends_at_both_points_and_keeps_the_norm_between_equal_norms():
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 16)
    assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(path[:, -1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=-1), a.norm(dim=1, keepdim=True).expand(3, 5), rtol=1e-4)
    # A straight line between them passes closer to the origin than either end.
    middle_of_line = (0.5 * (a + b)).norm(dim=1)
    assert (middle_of_line < a.norm(dim=1)).all()
    same = slerp(a, a.clone(), torch.linspace(0, 1, 3))  # parallel rows: no division by sin(0)
    assert torch.isfinite(same).all() and torch.allclose(same[:, 1], a, atol=1e-5)


@pytest.fixture
def stylegan_file(tmp_path):
    G = tiny_generator(num_classes=3).eval()
    return transgan.save(G, tmp_path / "style.safetensors", task="stylegan", class_names=["a", "b", "c"])


@pytest.mark.parametrize("space", ["z", "w"])
def test_walks_start_and_end_at_the_seeds_images(stylegan_file, space):
    G = transgan.load(stylegan_file)
    walk = latent_walk(G, space, steps=5, rows=2, seed=10, label=1)
    assert walk.shape == (10, 3, 16, 16)
    # Row r goes from seed 10 + 2r to seed 11 + 2r: its ends are those seeds' own samples.
    for row, start_seed in enumerate((10, 12)):
        assert torch.allclose(walk[row * 5], generate(G, [1], 1, seed=start_seed)[0], atol=1e-5)
        assert torch.allclose(walk[row * 5 + 4], generate(G, [1], 1, seed=start_seed + 1)[0], atol=1e-5)
    assert not torch.allclose(walk[1], walk[0]) and not torch.allclose(walk[1], walk[4])


def test_w_walk_is_a_straight_line_in_w(stylegan_file):
    G = transgan.load(stylegan_file)
    captured = []
    original = G.synthesis
    G.synthesis = lambda ws, *args, **kwargs: captured.append(ws) or original(ws, *args, **kwargs)
    latent_walk(G, "w", steps=3, rows=1, seed=0, label=0)
    ws = captured[0]
    assert torch.allclose(ws[1], 0.5 * (ws[0] + ws[2]), atol=1e-6)


def test_cli_writes_a_strip_and_a_looping_gif(stylegan_file, tmp_path):
    result = cli("generate", str(stylegan_file), "--interpolate", "--space", "w", "--class", "b", "--steps", "6",
                 "--n", "2", "--out", str(tmp_path / "walk.png"))  # fmt: skip
    assert result.exit_code == 0, result.output
    strip = Image.open(tmp_path / "walk.png")
    assert strip.width > strip.height  # 2 rows of 6
    result = cli("generate", str(stylegan_file), "--interpolate", "--space", "z", "--class", "0", "--steps", "6",
                 "--out", str(tmp_path / "walk.gif"))  # fmt: skip
    assert result.exit_code == 0, result.output
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.n_frames == 10 and gif.info["loop"] == 0  # forward 6, back 4: no jump when it loops
    assert min(gif.size) >= 256


def test_walk_mistakes_are_one_line(stylegan_file, tmp_path):
    out = str(tmp_path / "x.png")
    for args, message in [
        (["--space", "w", "--class", "a"], "add --interpolate"),
        (["--interpolate", "--space", "q", "--class", "a"], "--space q: use z"),
        (["--interpolate", "--space", "w", "--class", "a", "--class", "b"], "at most one --class"),
        (["--interpolate", "--space", "w"], "pass one --class"),
    ]:
        result = cli("generate", str(stylegan_file), *args, "--out", out)
        assert result.exit_code != 0 and isinstance(result.exception, TransganError), result.output
        assert message in str(result.exception)
    result = cli("generate", "mnist-cgan", "--interpolate", "--space", "w", "--class", "3", "--out", out)
    assert isinstance(result.exception, TransganError) and "needs a StyleGAN model" in str(result.exception)
    result = cli("generate", "mnist-cgan", "--class", "3", "--out", str(tmp_path / "x.gif"))
    assert isinstance(result.exception, TransganError) and "add --interpolate" in str(result.exception)

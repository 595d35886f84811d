"""Options that would do nothing are refused with one line (--mbstd-group-size on a D without the layer, --nrow
with a fixed layout); `generate --class all` draws one row per class, and refuses an unconditional model."""

from __future__ import annotations

import pytest
from PIL import Image
from test_cgan import SIZE, cli, write_shapes
from test_trainer import TINY_NETS, quiet_config, write_images

from transgan.errors import TransganError
from transgan.tasks.cgan import CGANConfig
from transgan.tasks.cyclegan import CycleGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer

DIGIT = 28 + 2  # mnist-cgan's digits in a grid: 28 px and 2 px of padding


def test_mbstd_group_size_is_refused_for_a_discriminator_without_the_layer(tmp_path):
    write_images(tmp_path / "pairs" / "A", 2, seed=1)
    write_images(tmp_path / "pairs" / "B", 2, seed=2)
    pixel = dict(TINY_NETS, netd="pixel", mbstd_group_size=2)
    configs = {
        "pix2pix": Pix2PixConfig(data=str(tmp_path / "pairs"), **pixel),
        "cyclegan": CycleGANConfig(domain_a=str(tmp_path / "pairs/A"), domain_b=str(tmp_path / "pairs/B"), **pixel),
    }
    for task, config in configs.items():
        with pytest.raises(TransganError, match="--mbstd-group-size 2: --netd pixel has no minibatch-std layer"):
            build_trainer(task, config, quiet_config(tmp_path / task, steps=1, batch_size=2))
    # the PatchGANs take it
    config = Pix2PixConfig(data=str(tmp_path / "pairs"), **dict(pixel, netd="n_layers", n_layers_d=2))
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "ok", steps=1, batch_size=2))
    assert any(type(m).__name__ == "MinibatchStd" for m in trainer.task.networks["D"].modules())


def test_a_depth_is_refused_for_a_discriminator_of_fixed_depth(tmp_path):
    write_images(tmp_path / "pairs" / "A", 2, seed=1)
    write_images(tmp_path / "pairs" / "B", 2, seed=2)
    config = Pix2PixConfig(data=str(tmp_path / "pairs"), **dict(TINY_NETS, netd="basic", n_layers_d=5))
    with pytest.raises(TransganError, match="--n-layers-d 5: --netd basic has a fixed depth"):
        build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=1, batch_size=2))


@pytest.mark.parametrize(
    "extra", [["--interpolate", "--class", "1", "--class", "2"], ["--mix", "1,2", "3,4"]], ids=["interpolate", "mix"]
)
def test_nrow_is_refused_where_the_layout_is_fixed(extra, tmp_path):
    result = cli("generate", "mnist-cgan", "--nrow", "4", "--out", str(tmp_path / "grid.png"), *extra)
    assert result.exit_code != 0 and isinstance(result.exception, TransganError)
    assert "--nrow sets the columns of a sample grid" in str(result.exception)
    assert not (tmp_path / "grid.png").exists()


def test_class_all_draws_one_row_per_class(tmp_path):
    result = cli("generate", "mnist-cgan", "--class", "all", "--out", str(tmp_path / "grid.png"))
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "grid.png").size == (8 * DIGIT + 2, 10 * DIGIT + 2)  # 10 rows of 8
    result = cli("generate", "mnist-cgan", "--class", "all", "--n", "3", "--out", str(tmp_path / "samples"))
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in (tmp_path / "samples").iterdir())
    assert names == sorted(f"{digit}_{i:04d}.png" for digit in range(10) for i in range(3))
    for extra in (["--class", "3"], ["--interpolate"]):
        result = cli("generate", "mnist-cgan", "--class", "all", *extra, "--out", str(tmp_path / "x.png"))
        assert isinstance(result.exception, TransganError) and "--class all" in str(result.exception)


def test_class_all_of_an_unconditional_model_is_one_clear_line(tmp_path):
    shapes = write_shapes(tmp_path / "shapes", per_class=2)
    config = CGANConfig(data=str(shapes), image_size=SIZE, latent_dim=8, ngf=4, ndf=4, conditional=False)
    path = build_trainer("cgan", config, quiet_config(tmp_path / "run", steps=1, batch_size=2)).fit()
    result = cli("generate", str(path), "--class", "all", "--out", str(tmp_path / "grid.png"))
    assert isinstance(result.exception, TransganError)
    assert "is an unconditional model: it has no classes for --class all" in str(result.exception)

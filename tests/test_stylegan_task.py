"""The stylegan task: trains on the shared trainer, lazy R1 and path length run on schedule, resume is exact
(path-length mean included), the model file generates with truncation and a style-mixing grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from test_cgan import SIZE, cli, write_shapes

import transgan
from transgan.checkpoint import read_safetensors
from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.inference.sampling import generate, style_mixing
from transgan.logs import read_metrics
from transgan.tasks.stylegan import StyleGANConfig
from transgan.train import build_trainer, resume
from transgan.training_state import CHECKPOINT_FORMAT

TINY = dict(image_size=SIZE, latent_dim=8, w_dim=8, channel_base=64, channel_max=8)


@pytest.fixture
def shapes(tmp_path) -> Path:
    return write_shapes(tmp_path / "shapes")


def quiet(out: Path, **changes) -> TrainConfig:
    base = dict(out=str(out), batch_size=4, num_workers=0, progress=False, tensorboard=False, log_every=1)
    return TrainConfig(**{**base, "sample_every": 1000, "device": "cpu", **changes})


def test_trains_with_regularisers_on_schedule_and_generates_with_truncation(shapes, tmp_path):
    config = StyleGANConfig(
        data=str(shapes), r1_every=2, pl_weight=2.0, pl_every=3, diffaugment="color,translation", **TINY
    )
    trainer = build_trainer("stylegan", config, quiet(tmp_path / "run", steps=4, ema=0.9))
    assert trainer.plan.lr == {"G": 0.0025, "D": 0.0025} and trainer.plan.betas == (0.0, 0.99)
    path = trainer.fit()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows if "D/r1" in row] == [1, 3]  # steps 0 and 2 of 0..3
    assert [row["step"] for row in rows if "G/pl" in row] == [1, 4]  # steps 0 and 3
    for row in rows:
        assert 0.0 <= row["D/accuracy_real"] <= 1.0 and 0.0 <= row["D/accuracy_fake"] <= 1.0
        assert "D/real" in row and "D/fake" in row
    assert float(trainer.task.pl_mean) > 0  # the running mean moved from 0

    G = transgan.load(path)
    assert type(G).__name__ == "StyleGAN2Generator" and G.num_classes == 2
    assert not G.training  # eval mode: fixed noise, so a seed always gives the same image
    same = generate(G, [1], 3, seed=5, truncation=0.0)  # psi 0: every seed gives the class's average image
    plain = generate(G, [1], 3, seed=5)
    half = generate(G, [1], 3, seed=5, truncation=0.5)
    assert same.shape == (3, 1, SIZE, SIZE)
    assert torch.allclose(same[0], same[1], atol=1e-6) and torch.allclose(same[0], same[2], atol=1e-6)
    assert not torch.allclose(plain[0], plain[1])
    assert not torch.allclose(half, plain) and not torch.allclose(half, same)
    with pytest.raises(TransganError, match="psi"):
        generate(G, [1], 1, truncation=1.5)

    figure = style_mixing(G, [1, 2], [3, 4, 5], label=0, crossover=1)
    assert figure.shape == (3 * 4, 1, SIZE, SIZE)
    column = generate(G, [0], 1, seed=4)  # column seed 4 alone (generate draws the same z for seed 4)
    assert torch.allclose(figure[2], column[0], atol=1e-5)


def test_resume_is_bit_exact_with_path_length_mean(shapes, tmp_path):
    """4 steps straight == 2 steps, stop, resume to 4 (lazy R1, path length, mixing, DiffAugment all on)."""
    config = StyleGANConfig(data=str(shapes), r1_every=2, pl_weight=2.0, pl_every=2, diffaugment="translation", **TINY)
    common = dict(checkpoint_every=2, ema=0.9)
    build_trainer("stylegan", config, quiet(tmp_path / "straight", steps=4, **common)).fit()
    build_trainer("stylegan", config, quiet(tmp_path / "resumed", steps=2, **common)).fit()
    resume(tmp_path / "resumed", steps=4)

    straight, _ = read_safetensors(tmp_path / "straight/checkpoints/step_00000004.safetensors", CHECKPOINT_FORMAT)
    resumed, _ = read_safetensors(tmp_path / "resumed/checkpoints/step_00000004.safetensors", CHECKPOINT_FORMAT)
    assert straight.keys() == resumed.keys()
    assert any("pl_mean" in key for key in straight)
    assert [key for key in straight if not torch.equal(straight[key], resumed[key])] == []
    pl = lambda run: [r.get("G/pl_mean") for r in read_metrics(tmp_path / run / "metrics.jsonl")]  # noqa: E731
    assert pl("straight") == pl("resumed") and pl("straight")[2] is not None


def test_cli_trains_and_generates(shapes, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "stylegan", "--data", str(shapes), "--image-size", str(SIZE), "--latent-dim", "8",
                 "--w-dim", "8", "--channel-base", "64", "--channel-max", "8", "--steps", "2", "--batch-size", "4",
                 "--out", str(run), "--no-progress", "--num-workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli(
        "generate", str(run), "--class", "circle", "--n", "3", "--truncation", "0.7", "--out", str(tmp_path / "c")
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "circle_0000.png",
        "circle_0001.png",
        "circle_0002.png",
    ]
    result = cli("generate", str(run), "--class", "0", "--mix", "1,2", "3,4,5", "--out", str(tmp_path / "mix.png"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "mix.png") as grid:
        assert grid.size[0] > grid.size[1] > SIZE * 3  # 4 columns by 3 rows
    result = cli("generate", str(run), "--class", "0", "--mix", "1,x", "3", "--out", str(tmp_path / "bad.png"))
    assert isinstance(result.exception, TransganError) and "--mix 1,x" in str(result.exception)


def test_bad_options_are_one_line_errors(shapes, tmp_path):
    for options in ({"r1_every": 0}, {"mixing_prob": 1.5}, {"diffaugment": "rotate"}, {"pl_weight": -1.0}):
        config = StyleGANConfig(data=str(shapes), **TINY, **options)
        with pytest.raises(TransganError):
            build_trainer("stylegan", config, quiet(tmp_path / "bad", steps=1))

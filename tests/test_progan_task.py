"""The progan task: stages switch resolution and batch size on schedule, alpha ramps 0 -> 1 over each fade,
resume in the middle of a fade is bit-exact, a model file written mid-fade restores the EMA generator exactly,
the CLI trains and generates."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from test_cgan import SIZE, cli, write_shapes

import transgan
from transgan.checkpoint import read_safetensors
from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.inference.sampling import generate
from transgan.logs import read_metrics
from transgan.tasks.progan import ProGANConfig, ProGANTask
from transgan.train import build_trainer, resume
from transgan.training_state import CHECKPOINT_FORMAT

TINY = dict(image_size=SIZE, latent_dim=8, channel_base=32, channel_max=4)
# 16 px: stages at 4, 8 and 16 px. Batch 4 at 4 px, then 2: stage 0 takes 8 / 4 = 2 steps, stage 1 8 / 2 = 4
# steps (the first 4 / 2 = 2 of them fading in), stage 2 as many.
SCHEDULE = dict(stage_images=8, fade_images=4, final_images=8, stage_batch_sizes="4,2,2")


@pytest.fixture
def shapes(tmp_path) -> Path:
    return write_shapes(tmp_path / "shapes")


def quiet(out: Path, **changes) -> TrainConfig:
    base = dict(out=str(out), batch_size=4, num_workers=0, progress=False, tensorboard=False, log_every=1)
    return TrainConfig(**{**base, "sample_every": 1000, "device": "cpu", **changes})


def test_stages_switch_on_schedule_and_alpha_ramps(shapes, tmp_path):
    trainer = build_trainer("progan", ProGANConfig(data=str(shapes), **TINY, **SCHEDULE), quiet(tmp_path / "run"))
    assert trainer.plan.lr == {"G": 0.001, "D": 0.001} and trainer.plan.betas == (0.0, 0.99)
    assert [(s.resolution, s.images, s.fade_images, s.batch_size) for s in trainer.task.stages()] == [
        (4, 8, 0, 4),
        (8, 8, 4, 2),
        (16, 8, 4, 2),
    ]
    assert trainer.total_steps == 10  # the stages' images decide the length
    path = trainer.fit()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    column = lambda key: [row[key] for row in rows]  # noqa: E731
    assert column("stage/depth") == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert column("stage/alpha") == [1, 1, 0, 0.5, 1, 1, 0, 0.5, 1, 1]
    assert column("stage/resolution") == [4, 4, 8, 8, 8, 8, 16, 16, 16, 16]  # the reals D saw
    assert column("stage/batch") == [4, 4, 2, 2, 2, 2, 2, 2, 2, 2]
    assert all(row["D/gp"] >= 0 and row["D/drift"] >= 0 and "D/accuracy_real" in row for row in rows)
    for net in trainer.task.networks.values():
        assert (net.depth, net.alpha) == (2, 1.0)

    G = transgan.load(path)  # the model file holds the grown generator
    assert (G.depth, G.alpha, G.num_classes) == (2, 1.0, 0)
    assert generate(G, None, 3, seed=1).shape == (3, 1, SIZE, SIZE)


def test_resume_in_the_middle_of_a_fade_is_bit_exact(shapes, tmp_path):
    """6 steps straight == 3 steps (inside stage 1's fade: alpha 0 done, 0.5 next), stop, resume to 6; EMA included."""
    config = ProGANConfig(data=str(shapes), diffaugment="translation", **TINY, **SCHEDULE)
    common = dict(checkpoint_every=1000, ema=0.9)
    build_trainer("progan", config, quiet(tmp_path / "straight", steps=6, **common)).fit()
    build_trainer("progan", config, quiet(tmp_path / "resumed", steps=3, **common)).fit()
    assert read_metrics(tmp_path / "resumed" / "metrics.jsonl")[-1]["stage/alpha"] == 0.0  # step 3 of 1..3
    resume(tmp_path / "resumed", steps=6)

    straight, _ = read_safetensors(tmp_path / "straight/checkpoints/step_00000006.safetensors", CHECKPOINT_FORMAT)
    resumed, _ = read_safetensors(tmp_path / "resumed/checkpoints/step_00000006.safetensors", CHECKPOINT_FORMAT)
    assert straight.keys() == resumed.keys()
    assert [key for key in straight if not torch.equal(straight[key], resumed[key])] == []

    def rows(run: str) -> list[tuple]:
        return [(r["step"], r["loss/D"], r["stage/alpha"]) for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    assert rows("straight") == rows("resumed")
    assert [alpha for _, _, alpha in rows("resumed")][2:5] == [0.0, 0.5, 1.0]


def test_base_stage_follows_the_image_size(shapes):
    """28 px grows 7 -> 14 -> 28 (the base resolution_plan gives), not from 4."""
    config = ProGANConfig(data=str(shapes), image_size=28, latent_dim=8, channel_base=28, channel_max=4)
    task = ProGANTask(config, ProGANTask.build_dataset(config))
    assert [stage.resolution for stage in task.stages()] == [7, 14, 28]
    task.set_stage(1, 0.25)
    assert all((net.depth, net.alpha) == (1, 0.25) for net in task.networks.values())
    task.forward({"image": torch.zeros(4, 1, 28, 28), "label": torch.zeros(4, dtype=torch.long)})
    assert task.real.shape == (4, 1, 14, 14) and task.fake.shape == (4, 1, 14, 14)


def test_cli_trains_and_generates(shapes, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "progan", "--data", str(shapes), "--image-size", "8", "--latent-dim", "8",
                 "--channel-base", "16", "--channel-max", "4", "--stage-images", "4", "--fade-images", "4",
                 "--final-images", "8", "--batch-size", "4", "--out", str(run), "--no-progress",
                 "--num-workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli("generate", str(run), "--n", "2", "--out", str(tmp_path / "samples"))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "samples").iterdir())) == 2


@pytest.mark.parametrize(
    "options", [{"stage_batch_sizes": "4,2"}, {"stage_batch_sizes": "4,x,2"}, {"fade_images": 9}, {"n_critic": 0}]
)
def test_bad_options_are_one_line_errors(shapes, tmp_path, options):
    config = ProGANConfig(data=str(shapes), **TINY, **{**SCHEDULE, **options})
    with pytest.raises(TransganError):
        build_trainer("progan", config, quiet(tmp_path / "bad", steps=1))


def test_model_file_written_mid_fade_restores_the_ema_generator_exactly(shapes, tmp_path):
    """A checkpoint after step 4, inside stage 1's fade (alpha 0.5) and on no sample step (drawing a grid stages
    the EMA copy itself and would hide a copy the trainer left behind): the model file written then holds the
    EMA generator at depth 1, alpha 0.5, and the loaded generator's images equal that copy's to the bit."""
    config = ProGANConfig(data=str(shapes), **TINY, **SCHEDULE)
    trainer = build_trainer("progan", config, quiet(tmp_path / "run", steps=6, ema=0.9, checkpoint_every=4))
    kept = {}
    first_phase = trainer.phases[0]
    first_loss = first_phase.loss

    def keep_step_4_model_file():
        if trainer.step == 4 and not kept:  # the step-4 checkpoint and model file are written; step 5 not begun
            kept["file"] = tmp_path / "mid_fade.safetensors"
            shutil.copyfile(trainer.files.model_path, kept["file"])
            kept["G"] = copy.deepcopy(trainer.inference_networks()["G"])  # weights as written (EMA updates later)
        return first_loss()

    first_phase.loss = keep_step_4_model_file
    trainer.fit()
    assert [row["stage/alpha"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")][3] == 0.5
    assert kept["G"] is not trainer.task.networks["G"]  # the EMA copy
    G = transgan.load(kept["file"])
    assert (G.depth, G.alpha) == (1, 0.5)
    average = kept["G"]
    average.set_stage(1, 0.5)  # the stage of step 4 (the copy has moved on to step 5's since)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(G.eval()(z), average.eval()(z))
    written = G.state_dict()
    assert all(torch.equal(written[key], value) for key, value in average.state_dict().items())

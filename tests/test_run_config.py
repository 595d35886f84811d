"""RunConfig: TOML round trip, one check at creation, resume comparison; the recipe -> plan resolution."""

from __future__ import annotations

import pytest

from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.recipe import LRSchedule, Recipe, resolve_plan
from transgan.run_config import RunConfig
from transgan.tasks.cyclegan import CycleGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig


def test_toml_round_trip_rebuilds_the_same_run(tmp_path):
    run = RunConfig.build("pix2pix", {"data": "facades", "ngf": 8}, {"steps": 5, "lr": 1e-3, "out": "runs/x"})
    run.write(tmp_path / "config.toml")
    again = RunConfig.read(tmp_path / "config.toml")
    assert again == run and isinstance(again.model, Pix2PixConfig) and again.train.lr == 1e-3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp8"}, "--precision fp8: use fp32, bf16, fp16"),
        ({"best_mode": "up"}, "--best-mode up: use min, max"),
        ({"lr_policy": "step"}, "--lr-policy step: use constant, linear, cosine"),
        ({"batch_size": 0}, "--batch-size 0: must be 1 or more"),
        ({"checkpoint_minutes": -1.0}, "--checkpoint-minutes -1.0: must be 0"),
        ({"ema": 1.5}, "--ema 1.5: use a decay in"),
        ({"stop_signals": "TERM,KILL"}, "--stop-signals 'TERM,KILL'"),
    ],
)
def test_training_options_are_checked_when_made(options, message):
    with pytest.raises(TransganError, match=message.replace("(", r"\(")):
        TrainConfig(**options)


def test_unknown_sections_options_and_tasks_are_one_line(tmp_path):
    (tmp_path / "a.toml").write_text('task = "pix2pix"\n[trian]\nsteps = 3\n')
    with pytest.raises(TransganError, match="unknown section trian"):
        RunConfig.read(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('task = "pix2pix"\n[model]\nngff = 3\n')
    with pytest.raises(TransganError, match="unknown option ngff"):
        RunConfig.read(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text('task = "cyclegan"\n')
    with pytest.raises(TransganError, match="a config for task 'cyclegan', not 'pix2pix'"):
        RunConfig.layered("pix2pix", tmp_path / "c.toml", {}, {})


def test_resume_accepts_equal_options_and_names_each_difference():
    stored = RunConfig.build("cyclegan", {"domain_a": "h", "domain_b": "z", "ngf": 8}, {"steps": 4, "seed": 3})
    same = stored.resumed_with({"domain_a": "h", "ngf": 8}, {"seed": 3, "steps": 10, "num_workers": 0})
    assert same.model == stored.model and same.train.steps == 10 and same.train.num_workers == 0
    with pytest.raises(TransganError) as error:
        stored.resumed_with({"ngf": 16}, {"seed": 4})
    assert "--ngf 16 (stored: 8)" in str(error.value) and "--seed 4 (stored: 3)" in str(error.value)
    assert isinstance(stored.model, CycleGANConfig)


def test_plan_takes_the_recipe_unless_the_user_says_otherwise():
    recipe = Recipe(lr={"G": 1e-4, "D": 4e-4}, betas=(0.0, 0.99), batch_size=64, epochs=10, ema=0.999)
    plan = resolve_plan(TrainConfig(), recipe)
    assert (plan.lr, plan.betas, plan.batch_size, plan.ema) == ({"G": 1e-4, "D": 4e-4}, (0.0, 0.99), 64, 0.999)
    plan = resolve_plan(TrainConfig(lr=1e-3, lr_d=5e-5, beta1=0.5, batch_size=8, ema=0.0), recipe)
    assert (plan.lr, plan.betas, plan.batch_size, plan.ema) == ({"G": 1e-3, "D": 5e-5}, (0.5, 0.99), 8, 0.0)


def test_linear_schedule_counts_epochs_not_steps():
    schedule = LRSchedule("linear", epochs=2, decay_epochs=3, batches_per_epoch=4)
    assert schedule.steps == 20
    assert [schedule.factor(step) for step in (0, 7, 8, 12, 16, 19)] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.25]

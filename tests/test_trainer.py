"""The shared trainer: phase logic, exact resume, atomic checkpoints, NaN stop, schedules, health checks."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from transgan.checkpoint import read_safetensors
from transgan.config import TrainConfig
from transgan.health import diagnose
from transgan.logs import read_metrics
from transgan.recipe import lr_factor
from transgan.sampler import ResumableSampler
from transgan.tasks.cyclegan import CycleGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer, resume, train
from transgan.trainer import TrainingDiverged
from transgan.training_state import CHECKPOINT_FORMAT, list_checkpoints

TINY_NETS = dict(arch="resnet_6blocks", ngf=4, ndf=4, load_size=32, crop_size=32, preprocess="none")


def write_images(folder, count, seed, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")).save(folder / f"{i:03d}.png")


@pytest.fixture
def paired_dir(tmp_path):
    write_images(tmp_path / "pairs" / "A", 6, seed=1)
    write_images(tmp_path / "pairs" / "B", 6, seed=2)
    return tmp_path / "pairs"


@pytest.fixture
def unpaired_dirs(tmp_path):
    write_images(tmp_path / "horses", 5, seed=3)
    write_images(tmp_path / "zebras", 3, seed=4)
    return tmp_path / "horses", tmp_path / "zebras"


def quiet_config(out, **changes):
    base = dict(out=str(out), num_workers=0, progress=False, tensorboard=False, log_every=1, sample_every=1000)
    return TrainConfig(**{**base, **changes})


def parameters(net):
    return [p.detach().clone() for p in net.parameters()]


def test_d_phase_never_updates_g_and_g_phase_never_updates_d(paired_dir, tmp_path):
    trainer = build_trainer("pix2pix", Pix2PixConfig(data=str(paired_dir), **TINY_NETS), quiet_config(tmp_path / "r"))
    G, D = trainer.task.networks["G"], trainer.task.networks["D"]
    sampler = trainer.make_loader().sampler
    batch = next(iter(torch.utils.data.DataLoader(trainer.task.dataset, batch_size=2, sampler=sampler)))
    all_phases = trainer.phases

    trainer.phases = [p for p in all_phases if p.name == "D"]
    g_before, d_before = parameters(G), parameters(D)
    trainer._train_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(g_before, parameters(G)))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, parameters(D)))
    assert all(p.grad is None for p in G.parameters()), "the D step must see detached fakes"

    trainer.phases = [p for p in all_phases if p.name == "G"]
    D.zero_grad(set_to_none=True)
    d_before = parameters(D)
    trainer._train_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(d_before, parameters(D)))
    assert all(p.grad is None for p in D.parameters()), "D is frozen in the G step"
    assert all(p.requires_grad for p in D.parameters()), "D is unfrozen after the G step"


def test_n_critic_runs_g_every_nth_step(paired_dir, tmp_path):
    config = quiet_config(tmp_path / "r", batch_size=2)
    trainer = build_trainer("pix2pix", Pix2PixConfig(data=str(paired_dir), **TINY_NETS), config)
    g_phase = next(p for p in trainer.phases if p.name == "G")
    g_phase.interval = 3
    trainer.fit()
    g_rows = [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl") if "loss/G" in row]
    d_rows = [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl") if "loss/D" in row]
    assert g_rows == [1, 4, 7, 10, 13] and len(d_rows) == 15  # no --steps: the schedule's 3 + 2 epochs of 3 steps


@pytest.fixture(autouse=True)
def _short_default_schedule(monkeypatch):
    """Without --steps a task trains its full default schedule; keep the n_critic test to 15 steps."""
    from transgan.recipe import Recipe
    from transgan.tasks.pix2pix import Pix2PixTask

    monkeypatch.setattr(Pix2PixTask, "recipe", lambda self: Recipe(epochs=3, lr_policy="linear", decay_epochs=2))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_bit_exact(unpaired_dirs, tmp_path, num_workers):
    """6 steps straight == 3 steps, stop, resume to 6: weights, optimizer state and losses identical."""
    domain_a, domain_b = unpaired_dirs
    # Dropout and the image pool exercise the torch and Python RNGs; 5 images at batch 2 cross an epoch.
    config = CycleGANConfig(domain_a=str(domain_a), domain_b=str(domain_b), dropout=True, pool_size=3, **TINY_NETS)
    common = dict(batch_size=2, checkpoint_every=3, num_workers=num_workers, ema=0.9)
    train("cyclegan", config, quiet_config(tmp_path / "straight", steps=6, **common))
    train("cyclegan", config, quiet_config(tmp_path / "resumed", steps=3, **common))
    resume(tmp_path / "resumed", steps=6)

    straight, _ = read_safetensors(tmp_path / "straight/checkpoints/step_00000006.safetensors", CHECKPOINT_FORMAT)
    resumed, _ = read_safetensors(tmp_path / "resumed/checkpoints/step_00000006.safetensors", CHECKPOINT_FORMAT)
    assert straight.keys() == resumed.keys()
    different = [key for key in straight if not torch.equal(straight[key], resumed[key])]
    assert different == []
    losses = lambda run: [(r["step"], r["loss/G"], r["loss/D"]) for r in read_metrics(tmp_path / run / "metrics.jsonl")]  # noqa: E731
    assert losses("straight") == losses("resumed")
    assert [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_killed_checkpoint_write_leaves_previous_loadable(tmp_path):
    """A process killed in the middle of writing keeps the old file intact (temporary file + rename)."""
    target = tmp_path / "model.safetensors"
    script = textwrap.dedent(
        f"""
        import os, torch
        import transgan.checkpoint as checkpoint
        from transgan.nets import build_network
        net = build_network("basic", ndf=4)
        checkpoint.save(net, {str(target)!r})
        def dying_save(tensors, filename, metadata=None):
            with open(filename, "wb") as handle:
                handle.write(b"half a file")
            os._exit(9)  # the process dies here, as with SIGKILL
        checkpoint.save_file = dying_save
        torch.nn.init.constant_(net.model[0].weight, 1.0)
        checkpoint.save(net, {str(target)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    import transgan

    reloaded = transgan.load(target)
    assert not torch.all(reloaded.model[0].weight == 1.0)
    assert [p.name for p in tmp_path.iterdir()] != []


def test_nan_loss_stops_and_keeps_last_good_checkpoint(paired_dir, tmp_path):
    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    train("pix2pix", config, quiet_config(tmp_path / "run", steps=2, batch_size=2, checkpoint_every=2))
    good = list_checkpoints(tmp_path / "run" / "checkpoints")
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=6, batch_size=2, log_every=2))
    # Fault injection: from the 4th step on, the real D loss is turned into NaN.
    d_phase = next(p for p in trainer.phases if p.name == "D")
    real_loss = d_phase.loss

    def poisoned_loss():
        loss, metrics = real_loss()
        return (loss * math.nan if trainer.step >= 3 else loss), metrics

    d_phase.loss = poisoned_loss
    with pytest.raises(TrainingDiverged, match="NaN or infinite.*last good checkpoint is .*step_00000002"):
        trainer.fit(resume=True)
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == good
    assert trainer.step == 4  # stopped at the first log after the NaN, without writing a checkpoint


def test_run_directory_outputs(paired_dir, tmp_path):
    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    model_path = train("pix2pix", config, quiet_config(tmp_path / "run", steps=2, batch_size=2, sample_every=1))
    import transgan

    G = transgan.load(model_path)
    assert G.transgan_arch == "resnet_6blocks" and not G.training
    run = tmp_path / "run"
    assert (run / "config.toml").is_file() and (run / "curves.png").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_00000001.png", "step_00000002.png"]
    row = read_metrics(run / "metrics.jsonl")[-1]
    for key in ("loss/D", "loss/G", "D/real", "D/fake", "grad_norm/G", "grad_norm/D", "lr/G", "speed/images_per_s"):
        assert key in row and math.isfinite(row[key])


def test_linear_policy_matches_the_reference_rule():
    # The reference: lr_l = 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1), epoch counted from 0.
    assert [lr_factor("linear", e, 2, 3, 0) for e in range(5)] == [1.0, 1.0, 0.75, 0.5, 0.25]
    assert lr_factor("cosine", 0, 0, 0, 0.5) == pytest.approx(0.5)
    assert lr_factor("constant", 7, 1, 1, 0.9) == 1.0


def test_sampler_ranks_partition_the_combined_batch_and_resume_mid_epoch():
    single = list(ResumableSampler(10, batch_size=4, seed=5))
    ranks = [list(ResumableSampler(10, batch_size=2, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert single[0:2] == ranks[0][0:2] and single[2:4] == ranks[1][0:2]
    assert single[4:6] == ranks[0][2:4] and single[6:8] == ranks[1][2:4]
    later = ResumableSampler(10, batch_size=4, seed=5)
    later.set_position(0, start_batch=1)
    assert list(later) == single[4:]


def test_health_warnings_on_failure_signatures():
    healthy = [{"step": i, "loss/D": 0.6, "loss/G": 1.0 + 0.05 * i, "health/diversity": 0.9} for i in range(6)]
    assert diagnose(healthy) == []
    d_wins = [{"step": i, "loss/D": 0.01, "loss/G": 8.0} for i in range(6)]
    assert any("discriminator wins" in w for w in diagnose(d_wins))
    collapse = [{**row, "health/diversity": 0.02} for row in healthy]
    assert any("mode collapse" in w for w in diagnose(collapse))
    swinging = [{"step": i, "loss/D": 0.5, "loss/G": 0.2 if i % 2 else 4.0} for i in range(6)]
    assert any("oscillation" in w for w in diagnose(swinging))


def test_ctrl_c_finishes_the_step_and_saves_a_checkpoint(paired_dir, tmp_path):
    import os
    import signal

    from transgan.trainer import TrainingInterrupted

    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=50, batch_size=2))
    g_phase = next(p for p in trainer.phases if p.name == "G")
    real_loss = g_phase.loss

    def loss_then_interrupt():
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered mid-step
        return real_loss()

    g_phase.loss = loss_then_interrupt
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3.*--resume"):
        trainer.fit()
    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [3]
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert signal.getsignal(signal.SIGINT) is handler_before  # the trainer puts the caller's handler back


def test_bf16_autocast_on_cpu_trains(paired_dir, tmp_path):
    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    train("pix2pix", config, quiet_config(tmp_path / "run", steps=2, batch_size=2, precision="bf16"))
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert math.isfinite(row["loss/G"]) and math.isfinite(row["loss/D"])


def test_fp16_on_cpu_is_a_clear_error(paired_dir, tmp_path):
    from transgan.errors import TransganError

    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    with pytest.raises(TransganError, match="fp16 needs a CUDA GPU"):
        build_trainer("pix2pix", config, quiet_config(tmp_path / "run", device="cpu", precision="fp16"))


def test_max_minutes_ends_the_run_normally(paired_dir, tmp_path):
    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=10_000, max_minutes=0.05))
    model = trainer.fit()
    assert 0 < trainer.step < 10_000 and model.is_file()
    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [trainer.step]


def test_best_checkpoint_follows_the_chosen_metric_across_resume(paired_dir, tmp_path):
    config = Pix2PixConfig(data=str(paired_dir), **TINY_NETS)
    options = dict(batch_size=2, checkpoint_every=1, keep_last=1, best_metric="G/l1", best_mode="min")
    train("pix2pix", config, quiet_config(tmp_path / "run", steps=3, **options))
    resume(tmp_path / "run", steps=6)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    best_row = min(rows, key=lambda row: row["G/l1"])
    best, meta = read_safetensors(tmp_path / "run/checkpoints/best.safetensors", CHECKPOINT_FORMAT)
    assert meta["counters"]["step"] == best_row["step"] and meta["counters"]["best_value"] == best_row["G/l1"]
    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [6]  # best survives pruning
    import transgan

    assert transgan.load(tmp_path / "run" / "model_best.safetensors").transgan_arch == "resnet_6blocks"


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, {"G": 2e-4, "D": 2e-4}),
        ({"lr": 1e-3}, {"G": 1e-3, "D": 1e-3}),
        ({"lr": 1e-3, "lr_d": 5e-5}, {"G": 1e-3, "D": 5e-5}),
    ],
)
def test_lr_sets_every_phase_unless_one_rate_is_given(paired_dir, tmp_path, changes, expected):
    trainer = build_trainer(
        "pix2pix", Pix2PixConfig(data=str(paired_dir), **TINY_NETS), quiet_config(tmp_path / "r", **changes)
    )
    assert {phase.name: trainer.plan.lr[phase.group] for phase in trainer.phases} == expected

"""Runs that survive clusters: preemption signals, time-based checkpoints, --resume auto, failed writes,
torchrun restarts after a killed worker, and two launchers as two nodes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_distributed import NETS, TRAIN, assert_same_state, free_port
from test_trainer import quiet_config, write_images

from transgan.logs import read_metrics
from transgan.run_files import WriteFailed
from transgan.stopping import PREEMPTED_EXIT
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer, train
from transgan.training_state import list_checkpoints, read_training_checkpoint

TINY = ["--arch", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--preprocess", "none", "--num-workers", "0"]
QUIET = ["--no-progress", "--no-tensorboard", "--log-every", "1"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    write_images(root / "pairs" / "A", 6, seed=1)
    write_images(root / "pairs" / "B", 6, seed=2)
    return root / "pairs"


def command(pairs: Path, out: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "transgan", "train", "pix2pix", "--data", str(pairs), "--out", str(out)]
    return [*base, *TINY, *QUIET, *extra]


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def logged_steps(run: Path) -> list[int]:
    return [row["step"] for row in read_metrics(run / "metrics.jsonl")]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_preemption_signal_checkpoints_and_exits_75_then_resume_auto_continues(pairs, tmp_path, signal_name):
    run = tmp_path / "run"
    args = command(pairs, run, "--steps", "100000", "--resume", "auto")
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(logged_steps(run)) >= 3)
    job.send_signal(getattr(signal, signal_name))
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == PREEMPTED_EXIT, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: {signal_name} at step"), stderr
    saved = [step for step, _ in list_checkpoints(run / "checkpoints")]
    assert len(saved) == 1 and saved[0] >= 3  # the default --checkpoint-every 1000 would have written none

    # The job script runs the same command again: it continues the run instead of starting over.
    longer = [*args[: args.index("--steps")], "--steps", str(saved[0] + 2), "--resume", "auto"]
    again = subprocess.run(longer, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert logged_steps(run) == list(range(1, saved[0] + 3))


def test_time_based_checkpoints(pairs, tmp_path):
    config = Pix2PixConfig(data=str(pairs), **{k: v for k, v in NETS.items() if k != "norm"})
    # 0.01 s between time-based checkpoints: one after every step, though --checkpoint-every is 1000.
    train("pix2pix", config, quiet_config(tmp_path / "run", steps=4, checkpoint_minutes=0.01 / 60, keep_last=10))
    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [1, 2, 3, 4]


def test_resume_accepts_the_same_options_and_names_the_ones_that_differ(pairs, tmp_path):
    run = tmp_path / "run"
    first = subprocess.run(command(pairs, run, "--steps", "2"), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    # The same command again, without --resume: refused, the finished work is not overwritten.
    again = subprocess.run(command(pairs, run, "--steps", "2"), capture_output=True, text=True)
    assert again.returncode == 2 and "holds a run with checkpoints" in again.stderr, again.stderr
    # The same command with --resume added (and a longer --steps): accepted.
    resumed = subprocess.run(command(pairs, run, "--steps", "3", "--resume", str(run)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert logged_steps(run) == [1, 2, 3]
    # A different option: one line naming the new and the stored value.
    changed = command(pairs, run, "--steps", "4", "--resume", "auto", "--ngf", "8", "--lr", "0.01")
    result = subprocess.run(changed, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "--ngf 8 (stored: 4)" in lines[0] and "--lr 0.01 (stored: None)" in lines[0], lines[0]


def test_failed_checkpoint_write_stops_with_one_line_and_keeps_the_previous_one(pairs, tmp_path, monkeypatch):
    import transgan.checkpoint as checkpoint_module

    config = Pix2PixConfig(data=str(pairs), **{k: v for k, v in NETS.items() if k != "norm"})
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=4, checkpoint_every=2))
    real_save = checkpoint_module.save_file

    def disk_full_after_step_2(tensors, path, metadata=None):
        if trainer.step < 4:
            return real_save(tensors, path, metadata=metadata)
        Path(path).write_bytes(b"\0" * 100)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full_after_step_2)
    with pytest.raises(WriteFailed, match=r"No space left on device.*last complete checkpoint is .*step_00000002"):
        trainer.fit()
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000002.safetensors"]  # no temporary left behind
    assert read_training_checkpoint(folder / "step_00000002.safetensors").meta["counters"]["step"] == 2
    import transgan

    transgan.load(tmp_path / "run" / "model.safetensors")  # the model file of step 2 is whole too


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def train_args(pairs: Path, out: Path, steps: int) -> list[str]:
    options = {**NETS, **TRAIN, "batch_size": 1, "steps": steps, "num_workers": 0, "checkpoint_every": 2}
    args = ["-m", "transgan", "train", "pix2pix", "--data", str(pairs), "--no-dropout", "--out", str(out)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return [*args, "--no-progress", "--no-tensorboard", "--resume", "auto", "--keep-last", "20"]


@pytest.fixture(scope="module")
def single_8(pairs, tmp_path_factory):
    """One process, batch 2, 8 steps: what 2 processes of batch 1 must equal."""
    out = tmp_path_factory.mktemp("single") / "run"
    config = Pix2PixConfig(data=str(pairs), dropout=False, **NETS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train("pix2pix", config, quiet_config(out, batch_size=2, steps=8, checkpoint_every=2, keep_last=20, **TRAIN))
    finally:
        torch.set_num_threads(threads)
    return out


def worker_pids(agent: int) -> list[int]:
    """The processes torchrun's agent started (its children)."""
    children = Path(f"/proc/{agent}/task/{agent}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def test_torchrun_restarts_a_killed_worker_and_the_run_resumes_exactly(pairs, tmp_path, single_8):
    out = tmp_path / "elastic"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    launcher = torchrun("--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "2", *rendezvous)
    job = subprocess.Popen(
        [*launcher, *train_args(pairs, out, 8)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    wait_for(lambda: any(step >= 2 for step, _ in list_checkpoints(out / "checkpoints")))
    killed = False
    if job.poll() is None and worker_pids(job.pid):
        os.kill(worker_pids(job.pid)[-1], signal.SIGKILL)  # a worker dies without a word, mid-run
        killed = True
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    assert killed, "the run finished before a worker could be killed"
    assert "exitcode: -9" in stderr, stderr[-3000:]  # torchrun saw the worker die, restarted, and the run finished
    for step in (2, 8):
        assert_same_state(single_8, out, step=step)
    assert logged_steps(out) == list(range(1, 9))  # rows after the checkpoint were dropped and written again


def test_two_launchers_as_two_nodes_train_like_one_process(pairs, tmp_path, single_8):
    out = tmp_path / "nodes"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{free_port()}"
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "nodes-test"]
    launchers = [
        torchrun("--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1", *rendezvous) for rank in (0, 1)
    ]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    nodes = [subprocess.Popen([*launcher, *train_args(pairs, out, 4)], **pipes) for launcher in launchers]
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [stderr[-2000:] for _, stderr in results]
    for step in (2, 4):
        assert_same_state(single_8, out, step=step)

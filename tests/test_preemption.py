"""Preemption as clusters deliver it: the stop signal reaches the whole process group (SLURM, `timeout`, scancel),
data workers included, or only the launcher (torchrun's agent, `transgan train --nproc`). Every delivery ends
with a checkpoint at the step reached, exit 75 and no traceback, and the same command continues the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cluster import logged_steps, wait_for
from test_cluster import pairs as pairs  # noqa: F401 (a fixture)
from test_distributed import free_port

from transgan.errors import PREEMPTED_EXIT
from transgan.training_state import list_checkpoints

TINY = ["--arch", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--preprocess", "none", "--no-dropout"]
QUIET = ["--no-progress", "--no-tensorboard", "--log-every", "1", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "transgan", "train", "pix2pix", "--data", str(data), "--out", str(out), *TINY, *QUIET, *extra]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    # A session of its own: the test can signal its process group as SLURM or `timeout` would.
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or ENV, start_new_session=True)
    return subprocess.Popen(args, **pipes)


def saved_steps(run: Path) -> list[int]:
    return [step for step, _ in list_checkpoints(run / "checkpoints")]


def finish(job: subprocess.Popen) -> str:
    try:
        _, stderr = job.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    return stderr


def assert_resume_auto_finishes(args: list[str], run: Path, nproc: int = 1) -> None:
    step = max(saved_steps(run))
    more = ["--steps", str(step + 2), "--resume", "auto"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    again = subprocess.run([sys.executable, *args, *more], capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert max(saved_steps(run)) == step + 2


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_signal_to_the_process_group_with_data_workers(pairs, tmp_path, signal_name):  # noqa: F811
    run = tmp_path / "run"
    args = train_args(pairs, run, "--num-workers", "2")
    job = start([sys.executable, *args, "--steps", "100000"])
    wait_for(lambda: len(logged_steps(run)) >= 3)
    os.killpg(job.pid, getattr(signal, signal_name))  # the trainer and its two data workers alike
    stderr = finish(job)
    assert job.returncode == PREEMPTED_EXIT, stderr[-3000:]
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(f"error: {signal_name} at step"), stderr[-3000:]
    assert saved_steps(run) and saved_steps(run)[-1] >= 3
    assert_resume_auto_finishes(args, run)


@pytest.mark.parametrize("delivery", ["SIGTERM to the process group", "SIGUSR1 to the launcher"])
def test_nproc_launcher_stops_both_processes_with_a_checkpoint(pairs, tmp_path, delivery):  # noqa: F811
    run = tmp_path / "run"
    args = train_args(pairs, run, "--num-workers", "0")
    job = start([sys.executable, *args, "--steps", "100000", "--nproc", "2"])
    wait_for(lambda: len(logged_steps(run)) >= 3, seconds=180)
    if delivery.endswith("process group"):
        os.killpg(job.pid, signal.SIGTERM)
    else:
        os.kill(job.pid, signal.SIGUSR1)  # without handling it, torchrun's agent would die of it
    stderr = finish(job)
    assert job.returncode == PREEMPTED_EXIT, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: SIG"), stderr[-3000:]
    assert saved_steps(run), stderr[-3000:]
    assert_resume_auto_finishes(args, run, nproc=2)


def slurm_step(data: Path, run: Path, signals: str = "") -> tuple[subprocess.Popen, list[str]]:
    """The README's SLURM recipe on one node: torchrun with c10d rendezvous running `transgan train`."""
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    launcher = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", *rendezvous]
    launcher += ["--shutdown-timeout", "110"] + (["--signals-to-handle", signals] if signals else [])
    args = train_args(data, run, "--num-workers", "0")
    return start([sys.executable, *launcher, *args, "--steps", "100000", "--resume", "auto"]), args


def test_slurm_recipe_signals_every_process_of_the_step(pairs, tmp_path):  # noqa: F811
    # `--signal=USR1@120` reaches every process of the job step: torchrun's agent and its workers. The recipe
    # gives torchrun --signals-to-handle so that the agent passes it on and waits instead of dying of it.
    run = tmp_path / "run"
    job, args = slurm_step(pairs, run, "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    wait_for(lambda: len(logged_steps(run)) >= 3, seconds=180)
    os.killpg(job.pid, signal.SIGUSR1)
    stderr = finish(job)
    assert f"exit {PREEMPTED_EXIT}" in stderr and "SIGUSR1 at step" in stderr, stderr[-3000:]
    assert saved_steps(run), stderr[-3000:]
    assert_resume_auto_finishes(args, run, nproc=2)  # the requeued job runs the same command


def test_workers_stop_with_a_checkpoint_when_the_torchrun_agent_dies(pairs, tmp_path):  # noqa: F811
    # Without the recipe's --signals-to-handle, SIGUSR1 to the agent alone kills it and reaches no worker.
    run = tmp_path / "run"
    job, _ = slurm_step(pairs, run)
    wait_for(lambda: len(logged_steps(run)) >= 3, seconds=180)
    workers = [int(pid) for pid in Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()]
    assert len(workers) == 2
    os.kill(job.pid, signal.SIGUSR1)
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGUSR1  # the agent died of it, as torchrun does by default
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), seconds=180)
    _, stderr = job.communicate()
    assert "torchrun launcher" in stderr and "checkpoint saved" in stderr, stderr[-3000:]
    assert saved_steps(run) and saved_steps(run)[-1] >= 3


def test_a_data_worker_that_dies_anyway_does_not_cost_the_checkpoint(pairs, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    job = start([sys.executable, *train_args(pairs, run, "--num-workers", "2"), "--steps", "100000"])
    wait_for(lambda: len(logged_steps(run)) >= 3)
    children = Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)
    stderr = finish(job)
    assert job.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: loading the data failed after step") and "checkpoint saved" in last, last
    assert "Traceback" not in stderr
    step = int(last.split("after step ")[1].split()[0])
    assert saved_steps(run)[-1] == step

"""Data-parallel training: 2 gloo processes on CPU equal 1 process with the combined batch; resume; errors."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest
import torch
from test_trainer import quiet_config, write_images

from transgan import distributed
from transgan.errors import TransganError
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import resume, train
from transgan.training_state import list_checkpoints, read_training_checkpoint

# Instance norm and no dropout: each image's gradient does not depend on the other images of its batch, so
# averaging the per-process gradients is exactly the gradient of the combined batch.
NETS = dict(arch="resnet_6blocks", ngf=4, ndf=4, load_size=32, crop_size=32, preprocess="none", norm="instance")
# Biases in front of an instance norm have a true gradient of 0; Adam with eps 1e-8 turns their float noise
# (~1e-7, different in 1 and 2 processes) into +-lr steps. A larger eps keeps them near 0 in both runs.
TRAIN = dict(device="cpu", eps=1e-3, log_every=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_images(root / "pairs" / "A", 6, seed=1)
    write_images(root / "pairs" / "B", 6, seed=2)
    return root


@pytest.fixture(scope="module")
def single(data):
    """One process, batch 2, 5 steps, checkpoints at steps 3 and 5: the reference."""
    config = Pix2PixConfig(data=str(data / "pairs"), dropout=False, **NETS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker below; tiny networks run no faster on more threads
    try:
        train("pix2pix", config, quiet_config(data / "single", batch_size=2, steps=5, checkpoint_every=3, **TRAIN))
    finally:
        torch.set_num_threads(threads)
    return data / "single"


def assert_same_state(run_a, run_b, step):
    a = read_training_checkpoint(dict(list_checkpoints(run_a / "checkpoints"))[step])
    b = read_training_checkpoint(dict(list_checkpoints(run_b / "checkpoints"))[step])
    compared = [key for key in a.tensors if key.startswith(("net.", "opt."))]
    assert compared and set(compared) <= set(b.tensors)
    for key in compared:
        torch.testing.assert_close(b.tensors[key], a.tensors[key], rtol=1e-4, atol=1e-5, msg=f"{key} at step {step}")
    assert a.meta["counters"]["step"] == b.meta["counters"]["step"] == step


def _worker(rank: int, ports: list[int], data, errors) -> None:
    # The environment torchrun gives its workers; forked, so the worker needs no second `import torch`.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]))
    torch.set_num_threads(1)
    try:
        config = Pix2PixConfig(data=str(data / "pairs"), dropout=False, **NETS)
        train("pix2pix", config, quiet_config(data / "ddp", batch_size=1, steps=3, **TRAIN))
        os.environ["MASTER_PORT"] = str(ports[1])
        resume(data / "ddp", steps=5)
    except BaseException as error:  # reported to the test, which shows it
        errors.put(f"rank {rank}: {error!r}")
        raise


def test_two_processes_equal_one_with_the_combined_batch_and_resume(data, single):
    context = multiprocessing.get_context("fork")
    errors, ports = context.Queue(), [free_port(), free_port()]
    workers = [context.Process(target=_worker, args=(rank, ports, data, errors)) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    messages = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [w.exitcode for w in workers] == [0, 0], messages

    assert_same_state(single, data / "ddp", step=3)  # 2 x batch 1 == 1 x batch 2
    assert_same_state(single, data / "ddp", step=5)  # ... and after a resume with 2 processes
    # metrics are the means over both processes, logged once by rank 0 (steps 4-5 after the resume)
    rows = (data / "ddp" / "metrics.jsonl").read_text().splitlines()
    reference = (single / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 5
    for mine, theirs in zip(map(json.loads, rows), map(json.loads, reference)):
        assert mine["step"] == theirs["step"]
        assert mine["loss/G"] == pytest.approx(theirs["loss/G"], rel=1e-4)
        assert mine["D/real"] == pytest.approx(theirs["D/real"], rel=1e-3, abs=1e-5)

    # A run of 2 processes continues only with 2: its data order is laid out for the global batch.
    with pytest.raises(TransganError, match="trained with 2 process"):
        resume(data / "ddp", steps=6)


def test_nproc_option_launches_torchrun(data, single):
    args = ["train", "pix2pix", "--data", str(data / "pairs"), "--no-dropout", "--out", str(data / "cli")]
    for key, value in {**NETS, **TRAIN, "batch_size": 1, "steps": 3, "num_workers": 0}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(
        [sys.executable, "-m", "transgan", *args, "--no-progress", "--no-tensorboard", "--nproc", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("model written to") == 1, result.stdout  # said by rank 0 only
    assert_same_state(single, data / "cli", step=3)


def test_clear_errors(monkeypatch):
    with pytest.raises(TransganError, match="3 processes per node with the NCCL backend need 3 GPUs, but this node"):
        distributed.check_gpu_count(3, gpus=2)
    distributed.check_gpu_count(2, gpus=2)
    with pytest.raises(TransganError, match="--nproc 0"):
        distributed.launch(0, ["train"], "cpu")

    port = free_port()  # nobody listens there
    for key, value in dict(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "1")
    with pytest.raises(TransganError, match=f"could not join the rendezvous at 127.0.0.1:{port}"):
        distributed.setup("cpu")
    with pytest.raises(TransganError, match="--nproc given inside a torchrun job"):
        distributed.launch(2, ["train"], "cpu")
    with pytest.raises(TransganError, match="same GPU"):
        distributed.setup("cuda:0")

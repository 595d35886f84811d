"""Batch translation split over processes and machines (`--nproc`, torchrun): disjoint shares balanced by size,
outputs byte-identical to one process, a killed process loses only its unfinished files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import real_data_path
from PIL import Image
from test_distributed import free_port

from transgan.inference.engines import open_engine
from transgan.inference.pipeline import translate_folder
from transgan.inference.sharding import Shard, share_plan

TORCH = ["--engine", "torch", "--resize", "64"]  # tiny images: the tests stay fast
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def translate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "transgan", "translate", "horse2zebra-mobile", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or ENV, timeout=300)


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if not path.name.startswith(".")}


@pytest.fixture(scope="module")
def horses(tmp_path_factory) -> Path:
    """Eight real horses, and beside them what one process writes for them (`single/`)."""
    root = tmp_path_factory.mktemp("shards")
    folder = root / "horses"
    folder.mkdir()
    for path in sorted(real_data_path("horse2zebra", "testA").glob("*.png"))[:8]:
        (folder / path.name).write_bytes(path.read_bytes())
    with open_engine("horse2zebra-mobile", engine="torch", device="cpu") as engine:
        translate_folder(engine, folder, root / "single", batch_size=8, resize=64)  # the command's defaults
    return folder


def test_share_plan_is_disjoint_complete_balanced_and_deterministic():
    weights = [100, 1, 1, 1, 50, 50, 3, 2, 2, 90]
    plan = share_plan(weights, 3)
    assert sorted(i for share in plan for i in share) == list(range(len(weights)))
    loads = [sum(weights[i] for i in share) for share in plan]
    assert max(loads) - min(loads) <= max(weights) and plan == share_plan(weights, 3)
    # by count alone, 2 processes would take 3 + 3 of these; by pixels the big image goes alone
    assert share_plan([16, 1, 1, 1, 1, 1], 2) == [[0], [1, 2, 3, 4, 5]]


def test_images_are_shared_by_pixels(tmp_path):
    sizes = [(64, 64), (8, 8), (8, 8), (8, 8), (8, 8), (64, 32)]
    paths = []
    for index, size in enumerate(sizes):
        paths.append(tmp_path / f"{index}.png")
        Image.new("RGB", size).save(paths[-1])
    shares = [Shard(rank, 2).select(paths) for rank in range(2)]
    assert shares == [[paths[0]], paths[1:]] and Shard().select(paths) == paths


def test_a_killed_process_loses_only_its_unfinished_files_and_a_rerun_completes(horses, tmp_path):
    out = tmp_path / "out"
    env = {**ENV, "RANK": "0", "WORLD_SIZE": "2"}
    command = [sys.executable, "-m", "transgan", "translate", "horse2zebra-mobile", str(horses), str(out)]
    job = subprocess.Popen([*command, *TORCH, "--batch-size", "1"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and outputs(out)) and job.poll() is None:
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)  # process 0 dies without a word after its first image
    job.wait()
    kept = outputs(out)
    assert 1 <= len(kept) <= 4  # its finished files only; process 1 never ran
    rerun = translate(str(horses), str(out), *TORCH, "--nproc", "2")  # the same command, in two processes
    assert rerun.returncode == 0, rerun.stderr
    assert "process 0 of 2" in rerun.stderr and "process 1 of 2" in rerun.stderr
    assert f"{4 - len(kept)} translated" in rerun.stderr and f"{len(kept)} skipped" in rerun.stderr
    assert "4 translated" in rerun.stderr  # process 1: its whole share (equal sizes: four each)
    assert outputs(out) == outputs(horses.parent / "single")


def test_two_torchrun_launchers_as_two_machines_split_the_folder(horses, tmp_path):
    out = tmp_path / "nodes"
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "shards"]
    # --engine auto (the default) in several processes: no cached choice here, so the default engine, unmeasured
    args = ["-m", "transgan", "translate", "horse2zebra-mobile", str(horses), str(out), "--resize", "64"]
    env = {**ENV, "TRANSGAN_CACHE": str(tmp_path / "cache")}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", *rendezvous]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    nodes = [subprocess.Popen([*launcher, "--node-rank", str(rank), *args], **pipes) for rank in (0, 1)]
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [stderr[-2000:] for _, stderr in results]
    said = "".join(stderr for _, stderr in results)
    assert "process 0 of 2" in said and "process 1 of 2" in said and said.count("4 translated") == 2
    assert outputs(out) == outputs(horses.parent / "single")


def test_auto_device_picks_cuda_then_mps_then_cpu_and_a_missing_device_is_one_line(monkeypatch):
    import torch

    from transgan.errors import TransganError
    from transgan.inference.engines import resolve_device

    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda mps=mps: mps)
        assert resolve_device("auto") == expected
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(TransganError, match="--device mps: no Apple MPS device is available here"):
        resolve_device("mps")
    with pytest.raises(TransganError, match="--device tpu: use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")


def test_fid_features_in_two_processes_equal_one(horses, tmp_path):
    import json

    import torch
    from torch import nn

    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.jit.script(extractor).save(str(tmp_path / "features.pt"))
    fake = horses.parent / "single"
    env = {**ENV, "TRANSGAN_CACHE": str(tmp_path / "cache")}  # where the processes leave their feature chunks
    options = ["--features", str(tmp_path / "features.pt"), "--batch-size", "2", "--kid", "--json", "--device", "cpu"]
    command = [sys.executable, "-m", "transgan", "eval", "fid", str(horses), str(fake), *options]
    one = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    two = subprocess.run([*command, "--nproc", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    assert json.loads(two.stdout) == json.loads(one.stdout)  # one report (process 0), the same numbers
    assert len(list((tmp_path / "cache" / "features").rglob("chunk_*.npz"))) == 8  # 4 batches per folder

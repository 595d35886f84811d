"""The fast training path gives the plain reference step's results; the speed benchmark's smoke run prints JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transgan.config import TrainConfig

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("task_name", "size", "overrides"),
    [
        # cyclegan: batched generator/discriminator passes (instance norm) + channels_last vs separate passes.
        ("cyclegan", 32, {"arch": "resnet_6blocks"}),
        # pix2pix with instance norm batches D's real/fake passes; batch norm keeps separate ones.
        ("pix2pix", 128, {"arch": "unet_128", "norm": "instance", "dropout": False}),
        ("pix2pix", 128, {"arch": "unet_128", "dropout": False}),
    ],
)
def test_fast_trainer_matches_plain_step(real_data, tmp_path, task_name, size, overrides):
    real_data("horse2zebra", "testA")
    real_data("facades", "test")
    torch.set_num_threads(1)  # tiny convs: a second thread only waits on a shared CPU
    bench = load_benchmark()
    config = bench.task_config(task_name, size, 4, flip=False, **overrides)
    train = TrainConfig(out=str(tmp_path), batch_size=2, device="cpu", num_workers=0, progress=False, seed=3)
    plain, trainers = bench.build_pair(task_name, config, train, ["fp32+cl"])
    trainer = trainers["fp32+cl"]
    conv_weight = next(p for p in trainer.task.networks.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    batches = iter(trainer.make_loader())
    for step in range(3):
        batch = next(batches)
        expected = plain(batch)
        trainer._train_step(batch)
        trainer.step += 1
        means = trainer.monitor.pop_means()
        got = {name: means[f"loss/{name}"] for name in ("G", "D")}
        for name in ("G", "D"):
            assert got[name] == pytest.approx(expected[name].item(), rel=1e-4, abs=1e-5), (step, name)
    # Adam turns last-bit differences of near-zero gradients into sign flips of a full lr-sized step (lr 2e-4),
    # and later steps compound them, so weights are held to that bound: 2 * lr per step at most.
    for name, net in trainer.task.networks.items():
        diff = (flat(net.state_dict()) - flat(plain.nets[name].state_dict())).abs()
        assert diff.max() <= 2 * 2e-4 * 3 + 1e-6, name


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().float().flatten() for t in state.values()])


def test_benchmark_quick_prints_json(real_data):
    real_data("facades", "test")
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--task", "pix2pix"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(done.stdout)
    rows = report["results"]
    assert [(row["batch_size"], row["variant"]) for row in rows] == [
        (1, "baseline"),
        (1, "fp32"),
        (2, "baseline"),
        (2, "fp32"),
    ]
    assert all(row["images_per_s"] > 0 and row["step_ms"] > 0 for row in rows)
    assert rows[0]["speedup"] == 1.0 and report["machine"]["threads"] == 1

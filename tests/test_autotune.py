"""Engine and batch-size choice by measuring: the fastest wins, the choice is cached per model and machine."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import transgan
from transgan.inference import autotune as tuning
from transgan.inference.autotune import Candidate, Measurement, autotune, machine_description, measure, pick, tuning_key
from transgan.inference.engines import Engine, open_engine
from transgan.nets import build_network


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))


def tiny_model(path, seed: int = 0):
    torch.manual_seed(seed)
    return transgan.save(build_network("resnet", ngf=4, n_blocks=1), path, task="cyclegan", directions={"AtoB": "G"})


class Slowed(Engine):
    """A real engine that also waits `delay` seconds per image (`power` 2: per image squared, so that larger
    batches are slower per image): a candidate known to be slower."""

    def __init__(self, inner: Engine, delay: float, power: int = 1):
        self.inner, self.delay, self.power = inner, delay, power
        self.info, self.device, self.precision, self.name = inner.info, inner.device, inner.precision, "slowed"

    def run(self, batch, labels=None):
        time.sleep(self.delay * len(batch) ** self.power)
        return self.inner.run(batch, labels)


def counted(name: str, opener, opens: list[str]) -> Candidate:
    def open_() -> Engine:
        opens.append(name)
        return opener()

    return Candidate(name, open_)


def test_key_changes_with_model_machine_and_device():
    machine = machine_description("cpu")
    assert machine["cpu"] and machine["cores"] >= 1 and isinstance(machine["isa"], list)
    assert machine["torch"] == torch.__version__
    setting = {"candidates": ["torch"], "size": [32, 32]}
    key = tuning_key("a" * 64, machine, "cpu", setting)
    assert key == tuning_key("a" * 64, dict(machine), "cpu", dict(setting))
    assert key != tuning_key("b" * 64, machine, "cpu", setting)  # another model
    other_isa = {**machine, "isa": [*machine["isa"], "avx512f"]} if "avx512f" not in machine["isa"] else {
        **machine, "isa": [f for f in machine["isa"] if f != "avx512f"]}  # fmt: skip
    assert key != tuning_key("a" * 64, other_isa, "cpu", setting)  # another CPU
    assert key != tuning_key("a" * 64, {**machine, "cores": machine["cores"] + 1}, "cpu", setting)
    assert key != tuning_key("a" * 64, {**machine, "onnxruntime": "0.0"}, "cpu", setting)
    assert key != tuning_key("a" * 64, machine, "cuda", setting)
    assert key != tuning_key("a" * 64, machine, "cpu", {**setting, "candidates": ["torch", "onnx"]})


def test_the_measured_fastest_wins(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")

    def torch_engine() -> Engine:
        return open_engine(model, engine="torch", device="cpu")

    for slow in ("first", "second"):  # whichever is slowed loses: no name is preferred
        candidates = [
            Candidate("first", lambda s=slow: Slowed(torch_engine(), 0.3 if s == "first" else 0.0)),
            Candidate("second", lambda s=slow: Slowed(torch_engine(), 0.3 if s == "second" else 0.0)),
        ]
        choice, engine = autotune(model, size=(32, 32), batch_sizes=(1, 2), budget_s=5, candidates=candidates,
                                  cache=False)  # fmt: skip
        assert choice.engine == ("second" if slow == "first" else "first"), choice.measurements
        fastest = max(choice.measurements, key=lambda m: m.images_per_s)
        assert (choice.engine, choice.batch_size) == (fastest.engine, fastest.batch_size)
        assert engine.delay == 0.0  # the engine handed back is the chosen one, open


def test_cached_choice_is_reused_per_model(tmp_path):
    first, second = tiny_model(tmp_path / "a.safetensors", 0), tiny_model(tmp_path / "b.safetensors", 1)
    opens: list[str] = []

    def candidates(model):
        slow = lambda: Slowed(open_engine(model, engine="torch", device="cpu"), 0.03)  # noqa: E731
        fast = lambda: open_engine(model, engine="torch", device="cpu")  # noqa: E731
        return [counted("slow", slow, opens), counted("fast", fast, opens)]

    choice, _ = autotune(first, size=(32, 32), batch_sizes=(1,), budget_s=5, candidates=candidates(first))
    # Measured: both opened (the fast one once more, to time its setup with caches warm).
    assert not choice.from_cache and choice.engine == "fast" and sorted(opens) == ["fast", "fast", "slow"]
    cached = list((tmp_path / "cache" / "autotune").glob("*.json"))
    assert len(cached) == 1
    stored = json.loads(cached[0].read_text())
    assert stored["choice"]["engine"] == "fast" and stored["machine"] == machine_description("cpu")

    opens.clear()
    again, engine = autotune(first, size=(32, 32), batch_sizes=(1,), budget_s=5, candidates=candidates(first))
    assert again.from_cache and again.engine == "fast" and again.key == choice.key
    assert opens == ["fast"]  # nothing measured: only the chosen engine was opened
    assert engine.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)

    opens.clear()
    other, _ = autotune(second, size=(32, 32), batch_sizes=(1,), budget_s=5, candidates=candidates(second))
    assert not other.from_cache and other.key != choice.key and "slow" in opens
    assert len(list((tmp_path / "cache" / "autotune").glob("*.json"))) == 2


def test_measurement_stays_within_budget(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    slow = Candidate("slow", lambda: Slowed(open_engine(model, engine="torch", device="cpu"), 0.2))
    sample = lambda n: (np.zeros((n, 3, 32, 32), np.float32),)  # noqa: E731
    start = time.perf_counter()
    results, engines, skipped = measure([slow], sample, batch_sizes=(1, 2, 4, 8), budget_s=0.5)
    # With no budget left, only the one measurement every candidate gets: batch 1, warm-up and one timed run.
    assert [(m.batch_size, m.runs) for m in results] == [(1, 1)]
    assert time.perf_counter() - start < 10  # 2 runs of 0.2 s and an engine to open, on a loaded machine
    assert not skipped and list(engines) == ["slow"]


def test_default_candidates_on_a_real_model(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    broken = tmp_path / "missing-int8.onnx"  # an int8 graph that is not there is skipped with its reason
    names = [c.name for c in tuning.default_candidates(model, "cpu", int8=broken, threads=[0, 1])]
    assert names == ["torch", "torch@1", "onnx", "onnx@1", "onnx-cpu", "onnx-cpu@1", "onnx-int8", "onnx-int8@1"]
    # One ONNX export is enough to show the real engines side by side (each export takes seconds).
    candidates = [c for c in tuning.default_candidates(model, "cpu", int8=broken, threads=[0]) if c.name != "onnx"]
    choice, engine = autotune(model, size=(32, 32), batch_sizes=(1, 2), budget_s=10, candidates=candidates)
    assert choice.engine in {"torch", "onnx-cpu"} and "onnx-int8" in choice.skipped
    assert {m.engine for m in choice.measurements if m.batch_size == 1} == {"torch", "onnx-cpu"}
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    expected = open_engine(model, engine="torch", device="cpu").run(x)
    assert np.abs(engine.run(x) - expected).max() < 1e-4


def test_thread_capped_engine_restores_the_count(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    engine = tuning.ThreadCapped(open_engine(model, engine="torch", device="cpu"), 1)
    before = torch.get_num_threads()
    assert engine.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)
    assert torch.get_num_threads() == before
    assert tuning.thread_counts("cuda") == [0] and tuning.thread_counts("cpu")[0] == 0


def test_pick_weighs_setup_for_a_known_job():
    quick_start = Measurement("onnx", 1, images_per_s=8.0, runs=3, setup_s=0.5, setup_warm=True)
    fast_run = Measurement("compiled", 4, images_per_s=10.0, runs=3, setup_s=6.0, setup_warm=True)
    assert pick([quick_start, fast_run]) is fast_run  # no job size: images/s alone
    assert pick([quick_start, fast_run], images=50) is quick_start  # 6.75 s vs 11 s
    assert pick([quick_start, fast_run], images=1000) is fast_run  # 125.5 s vs 106 s


def test_auto_on_a_small_job_runs_eager_without_measuring(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    sample = np.zeros((3, 32, 32), np.float32)
    engine, batch = tuning.open_auto(model, "cpu", sample=sample, job_images=3)
    assert engine.name == "torch" and batch is None  # 3 tiny images: measuring would cost more than it saves
    assert not (tmp_path / "cache" / "autotune").exists()


def test_larger_batches_that_lose_stop_the_search(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    worse = Candidate("worse", lambda: Slowed(open_engine(model, engine="torch", device="cpu"), 0.05, power=2))
    sample = lambda n: (np.zeros((n, 3, 32, 32), np.float32),)  # noqa: E731
    results, _, _ = measure([worse], sample, batch_sizes=(1, 2, 4, 8), budget_s=30)
    # Batch 2 is half as fast per image as batch 1, so batches 4 and 8 are not even tried.
    assert [m.batch_size for m in results] == [1, 2]
    assert pick(results).batch_size == 1

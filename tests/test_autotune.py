"""`--engine auto`: the fastest engine wins, choices are cached per model and machine, and what measuring may cost
is set by the job (a first timing times the image count): small jobs run the default, large ones measure more."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import transgan
from transgan import checkpoint
from transgan.errors import TransganError
from transgan.inference import autotune as tuning
from transgan.inference.autotune import autotune, measuring_budget, open_auto
from transgan.inference.candidates import ThreadCapped, affordable, default_candidates, thread_counts
from transgan.inference.engines import Engine, open_engine
from transgan.inference.measure import Candidate, Measurement, measure, pick
from transgan.inference.tuning_cache import machine_description, tuning_key
from transgan.models import open_model
from transgan.nets import build_network


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))
    # The export estimates scale with the machine's load; the tests fix it at idle so that the fake timings
    # alone decide (the scaling itself is checked below).
    monkeypatch.setattr(tuning, "machine_slowdown", lambda: 1.0)


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
    model = open_model(tiny_model(tmp_path / "m.safetensors"))
    broken = tmp_path / "missing-int8.onnx"  # an int8 graph that is not there is skipped with its reason
    names = [c.name for c in default_candidates(model, "cpu", size=(32, 32), int8=broken, threads=[0, 1])]
    assert names == ["torch", "onnx-cpu", "torch-cpu", "onnx", "onnx-int8",
                     "torch@1", "onnx-cpu@1", "torch-cpu@1", "onnx@1", "onnx-int8@1"]  # fmt: skip
    # The static graph with CPU rewrites for the folder's size is the one export worth measuring here.
    candidates = [c for c in default_candidates(model, "cpu", size=(32, 32), int8=broken, threads=[0])
                  if c.name in ("torch-cpu", "onnx-cpu", "onnx-int8")]  # fmt: skip
    assert [c.prepare_s > 0 for c in candidates] == [True, False, False]  # the static export is not cached yet
    choice, engine = autotune(model, size=(32, 32), batch_sizes=(1, 2), budget_s=2, candidates=candidates)
    assert choice.engine in {"torch-cpu", "onnx-cpu"} and "onnx-int8" in choice.skipped
    assert {m.engine for m in choice.measurements if m.batch_size == 1} == {"torch-cpu", "onnx-cpu"}
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    expected = open_engine(model, engine="torch", device="cpu").run(x)
    assert np.abs(engine.run(x) - expected).max() < 1e-4
    # Once exported, the static graph costs nothing to open again; other sizes run on the default engine.
    again = {c.name: c for c in default_candidates(model, "cpu", size=(32, 32), threads=[0])}
    assert again["onnx-cpu"].prepare_s == 0
    sized = again["onnx-cpu"].open()
    y = np.random.default_rng(1).uniform(-1, 1, (1, 3, 24, 40)).astype(np.float32)
    assert np.abs(sized.run(y) - open_engine(model, engine="torch", device="cpu").run(y)).max() < 1e-4
    assert "32x32" in sized.describe() and "CPU rewrites" in sized.describe()


def test_thread_capped_engine_restores_the_count(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    engine = ThreadCapped(open_engine(model, engine="torch", device="cpu"), 1)
    before = torch.get_num_threads()
    assert engine.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)
    assert torch.get_num_threads() == before
    assert thread_counts("cuda") == [0] and thread_counts("cpu")[0] == 0


def test_pick_weighs_setup_for_a_known_job():
    quick_start = Measurement("onnx", 1, images_per_s=8.0, runs=3, setup_s=0.5, setup_warm=True)
    fast_run = Measurement("compiled", 4, images_per_s=10.0, runs=3, setup_s=6.0, setup_warm=True)
    assert pick([quick_start, fast_run]) is fast_run  # no job size: images/s alone
    assert pick([quick_start, fast_run], images=50) is quick_start  # 6.75 s vs 11 s
    assert pick([quick_start, fast_run], images=1000) is fast_run  # 125.5 s vs 106 s


def test_the_budget_follows_the_job():
    assert measuring_budget(40.0) == pytest.approx((4.0, 10.0))  # a tenth measuring, a quarter exporting
    assert measuring_budget(10_000.0, budget_s=60) == pytest.approx((60.0, 2500.0))
    free = Candidate("default", lambda: None)
    runs = [Candidate(f"cheap{i}", lambda: None) for i in range(3)]
    export = Candidate("exported", lambda: None, prepare="graph", prepare_s=5.0)
    shared = Candidate("exported@1", lambda: None, prepare="graph", prepare_s=5.0)
    # Three runs of 0.5 s per candidate measured: 4 s of measuring pays for two more candidates.
    chosen, left = affordable([free, *runs], 0.5, measure_s=4.0, prepare_s=0.0)
    assert [c.name for c in chosen] == ["default", "cheap0", "cheap1"] and [c.name for c in left] == ["cheap2"]
    # An export counts once for the thread-count variants that share it; the first candidate is always in.
    chosen, _ = affordable([free, export, shared], 0.1, measure_s=4.0, prepare_s=5.0)
    assert [c.name for c in chosen] == ["default", "exported", "exported@1"]
    chosen, left = affordable([free, export, shared], 0.1, measure_s=4.0, prepare_s=4.9)
    assert [c.name for c in chosen] == ["default"] and len(left) == 2


def test_small_job_runs_the_default_without_measuring(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    sample = np.zeros((3, 32, 32), np.float32)
    lines: list[str] = []
    engine, batch = open_auto(model, "cpu", sample=sample, job_images=3, say=lines.append)
    # 3 tiny images: a tenth of the job pays for no other engine; the default (torch eager) runs as it is.
    assert engine.name == "torch" and not engine.info.get("rewrites") and batch is None
    assert "without measuring" in lines[-1]
    assert not (tmp_path / "cache" / "autotune").exists() and not (tmp_path / "cache" / "onnx").exists()


def test_a_fake_first_timing_decides_how_much_is_measured(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    sample = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32)).astype(np.float32)
    options = {"device": "cpu", "sample": sample, "budget_s": 4}
    # 1,000 images at 10 ms: 10 s of work, 1 s to measure, 2.5 s to export: the cheap engines only, no export.
    engine, batch = open_auto(model, job_images=1000, seconds_per_image=0.01, **options)
    stored = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "autotune").glob("*.json")]
    assert len(stored) == 1 and batch == stored[0]["choice"]["batch_size"]
    measured = {m["engine"] for m in stored[0]["measurements"]}
    assert "torch-cpu" in measured and "torch" in measured and not measured & {"onnx-cpu", "onnx", "compiled"}
    assert {"onnx-cpu", "onnx", "compiled"} <= set(stored[0]["left_out"])
    assert not (tmp_path / "cache" / "onnx").exists()  # nothing exported
    # The same job again: the cached choice, nothing measured or exported.
    lines: list[str] = []
    open_auto(model, job_images=1000, seconds_per_image=0.01, say=lines.append, **options)
    assert "(cached)" in lines[-1] and not (tmp_path / "cache" / "onnx").exists()
    # A job whose quarter pays for the static export (5 s estimated) but not a compile: measured again, with it.
    open_auto(model, job_images=1000, say=lines.append, **options)  # the cached speed estimates this job
    lines.clear()
    engine, _ = open_auto(model, job_images=3000, seconds_per_image=0.01, say=lines.append, **options)
    assert any(line.startswith("measuring") for line in lines)
    stored = json.loads(next((tmp_path / "cache" / "autotune").glob("*.json")).read_text())
    measured = {m["engine"] for m in stored["measurements"]}
    assert "onnx-cpu" in measured and "compiled" not in measured and "compiled" in stored["left_out"]
    assert list((tmp_path / "cache" / "onnx").glob("*-32x32b1.onnx"))


def test_the_model_file_is_read_once(tmp_path, monkeypatch):
    path = tiny_model(tmp_path / "m.safetensors")
    reads: list[Path] = []
    original = Path.read_bytes

    def counting(self: Path) -> bytes:
        if self.resolve() == path.resolve():
            reads.append(self)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    monkeypatch.setattr(checkpoint, "load_file", lambda *a, **k: pytest.fail("a second way of reading the file"))
    sample = np.zeros((3, 32, 32), np.float32)
    # Measuring with exports (static and dynamic graphs), torch engines and their copies: one read of the file.
    open_auto(str(path), "cpu", sample=sample, job_images=10_000, seconds_per_image=0.01, budget_s=3)
    assert len(reads) == 1
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2


def test_int8_with_auto_on_a_small_job_is_refused_before_exporting(tmp_path, real_data):
    model = tiny_model(tmp_path / "m.safetensors")
    sample = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(TransganError, match=r"--int8 with --engine auto: 3 images .* too few .* --engine onnx --int8"):
        open_auto(model, "cpu", sample=sample, job_images=3, int8_calibrate=real_data("horse2zebra", "testA"))
    assert not (tmp_path / "cache" / "onnx").exists()  # refused before the (minutes long) int8 export


def test_larger_batches_that_lose_stop_the_search(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    worse = Candidate("worse", lambda: Slowed(open_engine(model, engine="torch", device="cpu"), 0.05, power=2))
    sample = lambda n: (np.zeros((n, 3, 32, 32), np.float32),)  # noqa: E731
    results, _, _ = measure([worse], sample, batch_sizes=(1, 2, 4, 8), budget_s=30)
    # Batch 2 is half as fast per image as batch 1, so batches 4 and 8 are not even tried.
    assert [m.batch_size for m in results] == [1, 2]
    assert pick(results).batch_size == 1


def test_autotune_module_is_the_small_orchestrator():
    assert tuning.MEASURE_SHARE == 0.1 and len(Path(tuning.__file__).read_text().splitlines()) < 350


def test_machine_slowdown_is_the_load_per_core(monkeypatch):
    monkeypatch.undo()
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 0.0, 0.0))
    cores = len(os.sched_getaffinity(0))
    assert tuning.machine_slowdown() == pytest.approx(max(1.0, 6.0 / cores))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert tuning.machine_slowdown() == 1.0

"""The torch.compile engine: equal to eager within 1e-4 on CPU (inductor); few graphs for a folder of mixed sizes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import transgan
from transgan.checkpoint import ModelFile
from transgan.errors import TransganError
from transgan.inference.compiled import CompiledEngine, batch_bucket, open_compiled
from transgan.inference.engines import TorchEngine
from transgan.nets import build_network


@pytest.fixture
def tiny_translator():
    torch.manual_seed(0)
    net = build_network("resnet", ngf=4, n_blocks=1).eval()
    return net, ModelFile.from_networks({"G": net}).info().as_dict()


@pytest.fixture(autouse=True)
def inductor_cache(monkeypatch, tmp_path):
    # A fixed folder, so a second test run reuses the compiled kernels instead of compiling again.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "transgan-test-inductor"))
    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))


def test_batch_bucket():
    assert [batch_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]


def test_inductor_equals_eager_on_cpu(tiny_translator):
    net, info = tiny_translator
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    eager = TorchEngine(net, info, "cpu").run(x)
    engine = CompiledEngine(net, info, "cpu")  # inductor, the default backend
    compiled = engine.run(x)  # 3 images run padded to a batch of 4
    assert engine.compiled_shapes == [(4, 3, 32, 32)]
    assert compiled.shape == eager.shape == (3, 3, 32, 32)
    diff = float(np.abs(compiled - eager).max())
    print(f"compiled (inductor, CPU) vs eager max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_mixed_sizes_compile_a_few_graphs(tiny_translator):
    # dynamo's "eager" backend compiles (traces and guards) exactly as inductor does, without generating kernels:
    # the count of graphs is the same, in a fraction of the time.
    net, info = tiny_translator
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    engine = CompiledEngine(net, info, "cpu", static_shapes=2, backend=counting_backend)
    eager = TorchEngine(net, info, "cpu")
    rng = np.random.default_rng(1)
    sizes = [(32, 32), (32, 32), (48, 32), (40, 40), (64, 48), (32, 48), (48, 32)]
    for i, (h, w) in enumerate(sizes):
        x = rng.uniform(-1, 1, (1 + i % 3, 3, h, w)).astype(np.float32)
        assert np.abs(engine.run(x) - eager.run(x)).max() <= 1e-5
    # Two sizes got their own graphs (one per batch bucket met); the three other sizes shared the symbolic graph,
    # which torch compiles twice: once for batch 1 (it always specialises sizes of 1) and once for larger batches.
    assert {shape[2:] for shape in engine.compiled_shapes} == {(32, 32), (48, 32)}
    assert engine.dynamic_used
    assert len(graphs) == len(engine.compiled_shapes) + 2


def test_samplers_are_refused():
    net = build_network("dcgan_generator", latent_dim=8, image_size=16, ngf=4)
    info = ModelFile.from_networks({"G": net}).info().as_dict()
    with pytest.raises(TransganError, match="translators"):
        CompiledEngine(net, info, "cpu")


def test_open_compiled_takes_a_model_file_and_compiles_a_copy(tmp_path):
    from transgan.inference.engines import open_engine
    from transgan.models import open_model

    torch.manual_seed(0)
    path = transgan.save(build_network("resnet", ngf=4, n_blocks=1), tmp_path / "m.safetensors", task="cyclegan",
                         directions={"AtoB": "G"})  # fmt: skip
    model = open_model(path)
    engine = open_compiled(model, "cpu", backend="eager")  # dynamo traces as for inductor, without codegen
    net, _ = model.generator()
    assert engine.net is not net  # the ModelFile's network keeps its memory format and modes for other engines
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    expected = open_engine(model, engine="torch", device="cpu").run(x)
    assert np.abs(engine.run(x) - expected).max() <= 1e-5
    with pytest.raises(TransganError, match="--compile goes with --engine torch, not onnx"):
        open_engine(model, engine="onnx", device="cpu", compile=True)


@pytest.mark.parametrize("engines", [["onnx"], ["torch", "compiled"], ["torch", "tensorrt"]])
def test_bench_compile_is_refused_for_other_engines(tmp_path, engines):
    from transgan.cli.app import build_app
    from typer.testing import CliRunner

    torch.manual_seed(0)
    path = transgan.save(build_network("resnet", ngf=4, n_blocks=1), tmp_path / "m.safetensors")
    args = ["bench", str(path), "--compile", "--device", "cpu", "--size", "32x32"]
    for name in engines:
        args += ["--engine", name]
    result = CliRunner().invoke(build_app(), args)
    assert isinstance(result.exception, TransganError), result.output
    assert f"--compile goes with --engine torch, not {engines[-1]}" in str(result.exception)
    assert "\n" not in str(result.exception)

"""Inference engines: selection on a CPU-only machine, torch/ONNX agreement, bench, real GAN Compression parity."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import transgan
from transgan.errors import TransganError
from transgan.export.onnx import export_onnx
from transgan.inference.bench import benchmark
from transgan.inference.engines import OnnxEngine, TorchEngine, onnx_providers, open_engine
from transgan.inference.pipeline import translate_folder
from transgan.nets import build_network


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small resnet model file and its ONNX export."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = build_network("resnet_6blocks", ngf=4, init_gain=0.5)
    model = transgan.save(net, folder / "tiny.safetensors", task="pix2pix", directions={"AtoB": "G"})
    export_onnx(model, folder / "tiny.onnx")
    return model, folder / "tiny.onnx"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_only_machine_picks_the_cpu_provider_quietly(tiny_model, no_cuda, capfd):
    _, onnx_path = tiny_model
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any Python warning fails the test
        engine = open_engine(onnx_path, device="auto")
        engine.run(np.zeros((1, 3, 16, 16), np.float32))
    assert isinstance(engine, OnnxEngine)
    assert engine.providers == ["CPUExecutionProvider"] and engine.device == "cpu"
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # no provider-load errors from onnxruntime's C++ logger


def test_cuda_requested_without_a_device_is_one_clear_error(tiny_model, no_cuda):
    with pytest.raises(TransganError, match="no CUDA device"):
        open_engine(tiny_model[1], device="cuda")


def test_auto_engine_and_metadata_from_onnx(tiny_model):
    model, onnx_path = tiny_model
    torch_engine = open_engine(model, device="cpu")
    onnx_engine = open_engine(onnx_path, device="cpu")
    assert isinstance(torch_engine, TorchEngine) and isinstance(onnx_engine, OnnxEngine)
    for key in ("kind", "arch", "task", "direction", "size_multiple", "input_nc", "output_nc", "normalization"):
        assert torch_engine.info[key] == onnx_engine.info[key]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 20, 28)).astype(np.float32)
    assert np.abs(torch_engine.run(x) - onnx_engine.run(x)).max() <= 1e-4
    with pytest.raises(TransganError, match="engine onnx"):
        open_engine(onnx_path, engine="torch")


def test_torch_engine_low_precision_runs_close(tiny_model):
    model, _ = tiny_model
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    reference = open_engine(model, engine="torch", device="cpu").run(x)
    bf16 = open_engine(model, engine="torch", device="cpu", precision="bf16").run(x)
    # bf16 keeps 8 mantissa bits: close on average, with larger errors where tanh is steep.
    assert bf16.dtype == np.float32 and np.abs(bf16 - reference).mean() < 0.03


def test_onnx_file_without_transgan_metadata_is_refused(tiny_model, tmp_path):
    foreign = onnx.load(str(tiny_model[1]))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(TransganError, match="without transgan metadata"):
        open_engine(tmp_path / "foreign.onnx", device="cpu")


def test_bench_reports_latency_throughput_and_memory(tiny_model):
    result = benchmark(open_engine(tiny_model[1], device="cpu"), 2, (16, 16), warmup=1, iterations=3)
    assert result["iterations"] == 3 and result["images_per_s"] > 0
    assert result["latency_p99_ms"] >= result["latency_p50_ms"] > 0 and result["host_peak_mib"] > 0


@pytest.mark.realdata
def test_gan_compression_model_reproduces_its_outputs(real_data, tmp_path, monkeypatch):
    """The converted real checkpoint through the torch engine and after ONNX export: within 1/255 mean, 2/255 max."""
    from transgan.convert import load_gan_compression_checkpoint

    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))
    checkpoint = real_data("gan_compression_horse2zebra", "latest_net_G.pth")
    inputs, expected = real_data("horse2zebra", "testA"), real_data("horse2zebra", "gan_compression_fake_B")
    names = sorted(path.name for path in inputs.glob("*.png"))[:3]
    (tmp_path / "in").mkdir()
    for name in names:
        shutil.copy(inputs / name, tmp_path / "in" / name)
    net = load_gan_compression_checkpoint(checkpoint, channels="16_16_32_16_32_32_16_16")
    model = transgan.save(net, tmp_path / "gc.safetensors", task="cyclegan", directions={"AtoB": "G"})
    # The onnx engine exports the model file (parity-checked within 1e-4) and runs the exported .onnx.
    engines = {"torch": open_engine(model, engine="torch", device="cpu")}
    engines["onnx"] = open_engine(model, engine="onnx", device="cpu")
    assert engines["onnx"].path.suffix == ".onnx" and engines["onnx"].info["arch"] == "mobile_resnet"
    for label, engine in engines.items():
        summary = translate_folder(engine, tmp_path / "in", tmp_path / label, batch_size=2)
        assert summary.translated == len(names)
        for name in names:
            ours = np.asarray(Image.open(tmp_path / label / name), dtype=np.int16)
            theirs = np.asarray(Image.open(expected / name), dtype=np.int16)
            difference = np.abs(ours - theirs)
            assert difference.mean() <= 1 and difference.max() <= 2, (label, name)


def test_engine_that_replans_per_shape_sees_one_batch_shape_and_same_outputs(tiny_model, tmp_path):
    """GPU ONNX Runtime re-plans kernels per input shape: the pipeline pads the short last batch instead."""
    _, onnx_path = tiny_model
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype("uint8")).save(tmp_path / f"in_{i}.png")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in tmp_path.glob("in_*.png"):
        shutil.move(path, inputs / path.name)

    engine = open_engine(onnx_path, device="cpu")
    shapes = []
    run = engine.run
    engine.run = lambda batch, labels=None: shapes.append(batch.shape) or run(batch, labels)
    translate_folder(engine, inputs, tmp_path / "plain", batch_size=2)
    assert [s[0] for s in shapes] == [2, 2, 1]
    shapes.clear()
    engine.replans_per_shape = True
    translate_folder(engine, inputs, tmp_path / "padded", batch_size=2)
    assert [s[0] for s in shapes] == [2, 2, 2]
    for path in sorted((tmp_path / "plain").iterdir()):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "padded" / path.name)))


def test_an_onnx_file_keeps_its_test_time_mode(tiny_model):
    _, onnx_path = tiny_model  # a pix2pix model file: exported in the reference test-time mode
    assert open_engine(onnx_path, device="cpu").info["test_time"] == "reference"
    with pytest.raises(TransganError, match="exported in reference test-time mode; export it again with --eval"):
        open_engine(onnx_path, device="cpu", test_time="eval")


def test_translate_runs_pix2pix_the_reference_way_unless_eval(tmp_path):
    """Default: batch norm on each image's own statistics, seeded dropout; --eval: running statistics."""
    from transgan.cli.app import build_app
    from typer.testing import CliRunner

    from transgan.nets import test_time as test_time_module

    torch.manual_seed(0)
    net = build_network("unet", num_downs=6, ngf=4, norm="batch", dropout=True, init_gain=0.5)
    model = transgan.save(net, tmp_path / "p2p.safetensors", task="pix2pix", directions={"AtoB": "G"})
    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / "in" / f"{i}.png")
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2) / 127.5 - 1).float()
    with torch.no_grad():
        with test_time_module.test_time(net, "reference", seed=0):
            expected = {"reference": net(x)}
        with test_time_module.test_time(net, "eval"):
            expected["eval"] = net(x)
    for mode, extra in (("reference", []), ("eval", ["--eval"])):
        args = ["translate", model, tmp_path / "in", tmp_path / mode, "--device", "cpu", *extra]
        result = CliRunner().invoke(build_app(), [str(arg) for arg in args])
        assert result.exit_code == 0, result.output
        for i in range(2):
            ours = np.asarray(Image.open(tmp_path / mode / f"{i}.png"), dtype=np.float32) / 127.5 - 1
            assert np.abs(ours - expected[mode][i].permute(1, 2, 0).numpy()).max() <= 1.01 / 127.5, mode
    assert not np.array_equal(
        np.asarray(Image.open(tmp_path / "eval" / "0.png")), np.asarray(Image.open(tmp_path / "reference" / "0.png"))
    )

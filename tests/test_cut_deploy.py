"""CUT models after training: importing the official code's generators (and PatchGANs), ONNX export of the
blur-pool layers with parity, fp16 and int8, and translate / video / bench / eval / serve on a CUT model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import real_data_path
from PIL import Image
from test_export import small_generator
from transgan.cli.app import build_app
from typer.testing import CliRunner

import transgan
from transgan.checkpoint import read_model
from transgan.export.onnx import FP16_TOLERANCE, export_onnx


def invoke(*args) -> str:
    result = CliRunner().invoke(build_app(), [str(arg) for arg in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def kit():
    folder = real_data_path("cut_reference")
    return lambda name: folder / name


@pytest.fixture(scope="module")
def cut_model(tmp_path_factory):
    """A CUT model file (blur-pool down and up, ngf 4) with weights of a trained network's scale: at the init's
    std 0.02 every output is ~0 and parity would be trivial."""
    net = small_generator("resnet_6blocks_antialias")
    path = tmp_path_factory.mktemp("cut") / "cut.safetensors"
    return transgan.save({"G": net}, path, task="cut", directions={"AtoB": "G"}, extra={"input_nc": 3, "output_nc": 3})


@pytest.fixture(scope="module")
def horses(tmp_path_factory):
    folder = tmp_path_factory.mktemp("horses")
    for source in sorted(real_data_path("horse2zebra", "testA").glob("*.png"))[:2]:
        Image.open(source).convert("RGB").resize((64, 48)).save(folder / source.name)
    return folder


@pytest.mark.parametrize(
    ("case", "arch", "flags"),
    [
        ("G_resnet9_ngf16", "resnet_9blocks_antialias", (True, True)),
        ("G_resnet9_ngf8_no_antialias", "resnet_9blocks", (False, True)),
        ("G_resnet9_ngf8_no_antialias_up", "resnet_9blocks", (True, False)),
    ],
)
def test_convert_recognises_the_official_generators_by_their_keys(kit, tmp_path, case, arch, flags):
    invoke("convert", kit(f"{case}.pth"), tmp_path / "g.safetensors")
    model = read_model(tmp_path / "g.safetensors")
    config = model.primary.transgan_config
    assert model.primary.transgan_arch == arch
    assert (config.get("antialias", True), config.get("antialias_up", True)) == flags  # variants fix both
    with torch.no_grad():
        out = model.primary(torch.from_numpy(np.load(kit("input_real_A_64.npy"))))
    reference = np.load(kit(f"{case}.eval_output.npy"))
    assert np.abs(out.numpy() - reference).max() <= 1e-5


def test_convert_recognises_the_official_patchgan(kit, tmp_path):
    initial = np.load(kit("train_init_ngf8_ndf8_nc32.npz"))
    state = {key[2:]: torch.from_numpy(initial[key]) for key in initial.files if key.startswith("D.")}
    torch.save(state, tmp_path / "latest_net_D.pth")
    text = invoke("convert", tmp_path / "latest_net_D.pth", tmp_path / "d.safetensors")
    assert "basic_antialias" in text and "ndf=8" in text


@pytest.mark.slow
def test_onnx_export_of_the_blur_pool_layers_with_parity(cut_model, kit, tmp_path):
    assert read_model(cut_model).info().arch == "resnet_6blocks_antialias"
    report = export_onnx(cut_model, tmp_path / "cut.onnx")
    assert report.max_abs_diff <= 1e-4
    graph = onnx.load(str(report.path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("InstanceNormalization") == 1 + 2 + 2 * 6 + 2  # still exported as InstanceNormalization
    pads = [next(a.s for a in node.attribute if a.name == "mode") for node in graph.node if node.op_type == "Pad"]
    assert pads.count(b"reflect") >= 2 and pads.count(b"edge") == 2  # Downsample, Upsample
    grouped = [node for node in graph.node if any(a.name == "group" and a.i > 1 for a in node.attribute)]
    assert sorted(node.op_type for node in grouped) == ["Conv", "Conv", "ConvTranspose", "ConvTranspose"]
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    net = read_model(cut_model).primary
    for x in (np.load(kit("input_real_A_64.npy")), np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 80))):
        x = x.astype(np.float32)
        (ours,) = session.run(None, {"input": x})
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        assert ours.shape == expected.shape and np.abs(ours - expected).max() <= 1e-4
    half = export_onnx(cut_model, tmp_path / "cut16.onnx", fp16=True)
    assert half.max_abs_diff <= FP16_TOLERANCE


@pytest.mark.slow
def test_translate_video_bench_eval_and_int8_on_a_cut_model(cut_model, horses, tmp_path):
    text = invoke("translate", cut_model, horses, tmp_path / "torch", "--device", "cpu", "--engine", "torch")
    assert "2 translated" in text
    invoke("translate", cut_model, horses, tmp_path / "onnx", "--device", "cpu", "--engine", "onnx")
    for name in (p.name for p in horses.glob("*.png")):
        a = np.asarray(Image.open(tmp_path / "torch" / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=int)
        assert a.shape == (48, 64, 3) and np.abs(a - b).max() <= 1
    bench = json.loads(invoke("bench", cut_model, "--engine", "torch", "--size", "32x32", "--iterations", "1",
                              "--warmup", "0", "--device", "cpu", "--json"))  # fmt: skip
    assert len(bench) == 1
    pairs = tmp_path / "pairs"
    for side, source in (("A", horses), ("B", tmp_path / "torch")):
        (pairs / side).mkdir(parents=True)
        for image in source.glob("*.png"):
            (pairs / side / image.name).write_bytes(image.read_bytes())
    scores = json.loads(invoke("eval", "model", cut_model, "--data", pairs, "--no-fid", "--device", "cpu", "--json"))
    assert scores["psnr"] > 40  # the targets are its own translations (PNG rounding apart)
    text = invoke("export", cut_model, tmp_path / "int8.onnx", "--int8", "--calibrate", horses,
                  "--calibrate-size", "32", "--min-psnr", "10")  # fmt: skip
    assert "int8:" in text and (tmp_path / "int8.onnx").is_file()

    av = pytest.importorskip("av", reason="PyAV is the optional extra `video`")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for image in sorted(horses.glob("*.png")):
            frame = av.VideoFrame.from_ndarray(np.asarray(Image.open(image).convert("RGB")), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    text = invoke("translate", cut_model, clip, tmp_path / "zebras.mp4", "--device", "cpu", "--engine", "torch")
    assert "2 frames" in text and (tmp_path / "zebras.mp4").is_file()


def test_serve_translates_with_a_cut_model(cut_model):
    pytest.importorskip("uvicorn", reason="the optional extra `serve`")
    from test_serve import Limits, ServedModel, call, decoded, png, reference_translation, running

    from transgan.inference.engines import open_engine

    served = ServedModel(open_engine(str(cut_model), engine="torch", device="cpu"), "cut", Limits(200_000, 300, 8))
    pixels = np.asarray(Image.open(next(real_data_path("horse2zebra", "testA").glob("*.png"))).resize((64, 64)))
    with running(served) as port:
        status, _, body = call(port, "POST", "/translate", png(pixels), {"Content-Type": "image/png"})
    assert status == 200
    assert np.abs(decoded(body) - reference_translation(str(cut_model), pixels)).max() <= 1

"""`transgan translate`, `export`, `bench` and `convert` through the CLI: sizes, paths, resume, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transgan.cli.app import build_app
from typer.testing import CliRunner

import transgan
from transgan.errors import TransganError
from transgan.nets import build_network


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "resnet.safetensors"
    net = build_network("resnet_6blocks", ngf=4, init_gain=0.5)  # size_multiple 4
    return transgan.save(net, path, task="cyclegan", directions={"AtoB": "G"})


@pytest.fixture
def folder(tmp_path):
    """inputs: an odd-sized PNG, a JPEG in a subfolder, a greyscale image and an unreadable file."""
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(source / "odd.png")
    Image.fromarray(rng.integers(0, 255, (40, 24, 3), dtype=np.uint8)).save(source / "sub" / "photo.jpg")
    Image.fromarray(rng.integers(0, 255, (21, 19), dtype=np.uint8)).save(source / "grey.png")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return source


def invoke(*args: str, status: int = 0):
    result = CliRunner().invoke(build_app(), [str(arg) for arg in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == status, result.output
    return result


def test_translate_keeps_sizes_and_relative_paths_and_skips_unreadable(model, folder, tmp_path):
    out = tmp_path / "out"
    result = invoke("translate", model, folder, out, "--device", "cpu", "--batch-size", "2", status=1)
    assert Image.open(out / "odd.png").size == (53, 37)  # padded to 40x56 inside, cropped back
    assert Image.open(out / "sub" / "photo.jpg").size == (24, 40)
    assert Image.open(out / "grey.png").size == (19, 21)
    assert not (out / "broken.png").exists()
    assert "warning: skipped unreadable image" in result.output and "broken.png" in result.output
    assert "3 translated" in result.output and "1 unreadable" in result.output


def test_existing_outputs_are_skipped_unless_overwrite(model, folder, tmp_path):
    out = tmp_path / "out"
    (folder / "broken.png").unlink()
    invoke("translate", model, folder, out, "--device", "cpu")
    (out / "odd.png").write_bytes(b"kept")
    result = invoke("translate", model, folder, out, "--device", "cpu")
    assert "0 translated" in result.output and "3 skipped" in result.output
    assert "3/3" in result.output  # all done before the start: a full bar, not '0/?'
    assert (out / "odd.png").read_bytes() == b"kept"
    invoke("translate", model, folder, out, "--device", "cpu", "--overwrite")
    assert Image.open(out / "odd.png").size == (53, 37)


def test_every_failed_input_is_named_gif_is_read_and_the_status_says_so(model, folder, tmp_path):
    first, second = Image.new("RGB", (12, 8), (250, 10, 10)), Image.new("RGB", (12, 8), (10, 10, 250))
    first.save(folder / "anim.gif", save_all=True, append_images=[second], duration=100)
    (folder / "sub" / "dangling.png").symlink_to(tmp_path / "deleted.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "hidden").mkdir()
    (folder / "hidden" / ".x.png").symlink_to(tmp_path / "deleted.png")  # hidden: not an input at all
    out = tmp_path / "out"
    command = [sys.executable, "-m", "transgan", "translate", str(model), str(folder), str(out), "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr  # after the rest were done
    assert Image.open(out / "anim.gif").size == (12, 8)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["anim.gif", "grey.png", "odd.png", "photo.jpg"]
    assert "4 translated" in result.stderr and "3 unreadable" in result.stderr
    named = [line.split(": ")[1] for line in result.stderr.splitlines() if line.startswith("  unreadable: ")]
    assert named == [str(folder / "broken.png"), str(folder / "loop.jpg"), str(folder / "sub" / "dangling.png")]
    assert "symbolic link loop" in result.stderr and "broken symbolic link" in result.stderr
    assert "7/7" in result.stderr and "Traceback" not in result.stderr
    # A rerun has nothing left that it can do, and still says that three inputs failed.
    again = invoke("translate", model, folder, out, "--device", "cpu", status=1)
    assert "0 translated" in again.output and "4 skipped" in again.output and "3 unreadable" in again.output


def test_help_lists_the_exit_statuses():
    result = invoke("translate", "--help")
    assert "Exit status" in result.output
    for status in ("0:", "1:", "2:", "130:"):
        assert status in result.output


def test_ctrl_c_keeps_finished_outputs_and_exits_130(model, folder, tmp_path, monkeypatch):
    """A real SIGINT while the third output is written: exit 130, finished outputs kept, a rerun completes."""
    import transgan.inference.pipeline as pipeline

    (folder / "broken.png").unlink()
    for i in range(6):
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(folder / f"more_{i}.png")
    written = []
    original = pipeline.encode

    def encode_then_interrupt(pixels, target):
        original(pixels, target)
        written.append(target)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pipeline, "encode", encode_then_interrupt)
    # The suite may run as a background job, where SIGINT is ignored: take Python's Ctrl-C handler for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = invoke(
            "translate", model, folder, tmp_path / "out", "--device", "cpu", "--batch-size", "1", status=130
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "interrupted:" in result.output and "run the same command again" in result.output
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert 3 <= len(outputs) < 9 and not [p for p in outputs if p.name.endswith(".partial")]
    monkeypatch.setattr(pipeline, "encode", original)
    rerun = invoke("translate", model, folder, tmp_path / "out", "--device", "cpu")
    assert f"{9 - len(outputs)} translated" in rerun.output and f"{len(outputs)} skipped" in rerun.output


def test_png_option_and_resize(model, folder, tmp_path):
    out = tmp_path / "out"
    invoke("translate", model, folder, out, "--device", "cpu", "--png", "--resize", "32", status=1)
    assert Image.open(out / "sub" / "photo.png").size == (32, 53)  # shorter side 32, aspect kept


@pytest.mark.parametrize("inside", ["", "out", "sub/out"])
def test_refuses_to_write_into_the_input_folder(model, folder, inside):
    with pytest.raises(TransganError, match="outside the input folder"):
        invoke("translate", model, folder, folder / inside, "--device", "cpu")


def test_refuses_an_output_folder_that_contains_the_input(model, folder):
    with pytest.raises(TransganError, match="must not contain the input folder"):
        invoke("translate", model, folder, folder.parent, "--device", "cpu")


def test_user_errors_are_one_line_without_traceback(model, folder):
    command = [sys.executable, "-m", "transgan", "translate", str(model), str(folder), str(folder), "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr


def test_translate_with_the_onnx_engine_matches_torch(model, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))
    onnx_file = tmp_path / "model.onnx"
    result = invoke("export", model, onnx_file)
    assert "max abs diff" in result.output and onnx_file.is_file()
    invoke("translate", onnx_file, folder, tmp_path / "onnx", "--device", "cpu", status=1)  # broken.png
    invoke("translate", model, folder, tmp_path / "torch", "--device", "cpu", "--engine", "torch", status=1)
    for name in ("odd.png", "grey.png"):
        ours = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=np.int16)
        theirs = np.asarray(Image.open(tmp_path / "torch" / name), dtype=np.int16)
        assert np.abs(ours - theirs).max() <= 1
    bench = invoke("bench", onnx_file, "--size", "16x16", "--batch-size", "1", "--batch-size", "2", "--json")
    rows = json.loads(bench.output)
    assert [row["batch_size"] for row in rows] == [1, 2] and all(row["images_per_s"] > 0 for row in rows)


@pytest.mark.realdata
def test_convert_cli_imports_the_gan_compression_checkpoint(real_data, tmp_path):
    checkpoint = real_data("gan_compression_horse2zebra", "latest_net_G.pth")
    out = tmp_path / "horse2zebra.safetensors"
    invoke("convert", checkpoint, out, "--arch", "mobile_resnet", "--channels", "16_16_32_16_32_32_16_16")
    model = transgan.read_model(out)
    assert model.meta["task"] == "translation" and model.meta["directions"] == {"AtoB": "G"}
    assert model.primary.transgan_arch == "mobile_resnet"
    assert sum(p.numel() for p in model.primary.parameters()) == 356_867


def test_int8_options_are_honoured_or_refused_in_one_line(model, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    for bound in ("0", "-2"):  # one shared check: never silently replaced by the default
        with pytest.raises(TransganError, match=f"--min-psnr {bound}: give a positive number of dB"):
            invoke("translate", model, folder, out, "--int8", "--min-psnr", bound)
    with pytest.raises(TransganError, match="--calibrate and --min-psnr go with --int8"):
        invoke("translate", model, folder, out, "--calibrate", folder)
    # --engine auto measures the int8 graph it builds, so a folder too small to measure is refused before exporting.
    with pytest.raises(TransganError, match=r"--int8 with --engine auto: 4 images .* too few"):
        invoke("translate", model, folder, out, "--device", "cpu", "--int8")
    assert not (tmp_path / "cache" / "onnx").exists()
    # A video input takes the int8 options too: refused where they cannot run, never dropped.
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded: the options are refused before the video is opened")
    with pytest.raises(TransganError, match="--int8 runs with --engine onnx"):
        invoke("translate", model, clip, tmp_path / "clip-out.mp4", "--device", "cpu", "--int8")
    with pytest.raises(TransganError, match="--int8 on a model file needs --calibrate DIR"):
        invoke("translate", model, clip, tmp_path / "clip-out.mp4", "--device", "cpu", "--engine", "onnx", "--int8")
    with pytest.raises(TransganError, match="--min-psnr 0"):
        invoke("translate", model, clip, tmp_path / "clip-out.mp4", "--int8", "--min-psnr", "0")


def test_export_writes_the_cpu_graph_by_default_on_a_cpu_machine(model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the default is the plain graph")
    result = invoke("export", model, tmp_path / "m.onnx")
    assert "CPU rewrites" in result.output
    result = invoke("export", model, tmp_path / "plain.onnx", "--for-gpu")
    assert "plain graph" in result.output

"""Tiled translation equals the whole-image one: every translator family, both test-time modes, seeded dropout,
odd sizes, tiles larger than the image, activations in files; translate, video and serve take --tile."""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_data_path
from PIL import Image
from transgan.cli.app import build_app
from typer.testing import CliRunner

from transgan.errors import TransganError
from transgan.inference.pipeline import from_network, pad_to_multiple, to_network
from transgan.inference.tiled_run import stored_bytes, tile_bytes
from transgan.inference.tiles import TiledEngine, choose, open_tiled, open_translator, parse_memory
from transgan.inference.torch_engine import TorchEngine
from transgan.nets import build_network
from transgan.registry import NETWORKS, list_models

TOLERANCE = 1e-5  # float32: tiles sum in another order, norms use float64 statistics

# Every built-in translator: the families run below in both modes, the variants (more blocks or levels) once.
BUILT_IN = [name for name in list_models("translator") if NETWORKS.get(name).__module__.startswith("transgan.")]
# One small network per family and every norm, padding, dropout and resampling the families offer.
CASES = {
    "resnet": ("resnet", {"ngf": 4, "n_blocks": 1}),
    "resnet dropout": ("resnet", {"ngf": 4, "n_blocks": 2, "dropout": True}),
    "resnet antialias": ("resnet", {"ngf": 4, "n_blocks": 1, "antialias": True, "antialias_up": True}),
    "resnet batch replicate": ("resnet", {"ngf": 4, "n_blocks": 1, "norm": "batch", "padding": "replicate"}),
    "resnet no norm, zero padding": ("resnet", {"ngf": 4, "n_blocks": 1, "norm": "none", "padding": "zero"}),
    "unet": ("unet", {"ngf": 4, "num_downs": 5}),
    "unet dropout": ("unet", {"ngf": 4, "num_downs": 6, "dropout": True}),
    "unet instance": ("unet", {"ngf": 4, "num_downs": 5, "norm": "instance"}),
    "mobile": ("mobile_resnet", {"channels": "4_4_4_4_4_4_4_4", "n_blocks": 3}),
    "mobile dropout batch": (
        "mobile_resnet",
        {"channels": "4_4_4_4_4_4_4_4", "n_blocks": 3, "norm": "batch", "dropout": True},
    ),  # fmt: skip
}


def engine_for(net: torch.nn.Module, mode: str) -> TorchEngine:
    # Random running statistics, so eval-mode batch norm is not an identity that would hide a mistake.
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    info = {"kind": "translator", "input_nc": 3, "test_time": mode, "size_multiple": 4}
    return TorchEngine(net, info, "cpu")


def image(height: int, width: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 3, height, width)).astype(np.float32)


def network_case(arch: str, config: dict) -> tuple[torch.nn.Module, tuple[int, int]]:
    torch.manual_seed(0)
    net = build_network(arch, **config)
    multiple = int(getattr(net, "size_multiple", 4))
    # Not square, not a power of two where the network allows it (a U-Net needs multiples of 2**levels).
    return net, (multiple * 3, multiple * 5) if multiple > 4 else (44, 60)


@pytest.mark.parametrize("mode", ["eval", "reference"])
@pytest.mark.parametrize("case", list(CASES), ids=lambda c: c.replace(" ", "-").replace(",", ""))
def test_tiles_equal_the_whole_image(case, mode):
    net, (height, width) = network_case(*CASES[case])
    whole = engine_for(net, mode)
    x = image(height, width, batch=2)
    expected = whole.run(x)
    for tile in (16, 24):  # 24 does not divide the image: short tiles at the right and bottom edges
        tiled = TiledEngine(whole, tile=tile)
        assert np.abs(tiled.run(x) - expected).max() <= TOLERANCE, (case, mode, tile)
        assert tiled.last.tile == tile


@pytest.mark.parametrize("arch", BUILT_IN)
def test_every_built_in_translator_tiles_exactly(arch):
    net, (height, width) = network_case(arch, NETWORKS.entry(arch).info.get("test_config", {}))
    height, width = (height // 3, width // 5 * 2) if height > 60 else (height, width)  # U-Nets: 2 x 1 bottleneck
    whole = engine_for(net, "reference")
    x = image(height, width)
    assert np.abs(TiledEngine(whole, tile=max(16, height // 2)).run(x) - whole.run(x)).max() <= TOLERANCE


def test_dropout_is_on_and_seeded_like_the_untiled_network():
    net, _ = network_case("resnet", {"ngf": 4, "n_blocks": 2, "dropout": True})
    whole = engine_for(net, "reference")
    x = image(40, 52)
    with_masks = TiledEngine(whole, tile=16).run(x)
    np.testing.assert_allclose(with_masks, whole.run(x), atol=TOLERANCE)
    other_seed = TiledEngine(whole, tile=16, seed=7).run(x)
    assert np.abs(other_seed - with_masks).max() > 1e-3  # masks matter, so the match above is not an accident


def test_odd_sizes_and_tiles_larger_than_the_image():
    for arch, config in [("resnet", {"ngf": 4, "n_blocks": 1}), ("mobile_resnet", {"channels": "4_4_4_4_4_4_4_4"})]:
        net, _ = network_case(arch, config)
        whole = engine_for(net, "eval")
        for height, width in [(37, 51), (45, 19)]:  # the network itself rounds odd sizes; tiles must agree
            x = image(height, width)
            expected = whole.run(x)
            for tile in (16, 1000):
                assert np.abs(TiledEngine(whole, tile=tile).run(x) - expected).max() <= TOLERANCE


def test_max_memory_runs_small_images_whole_and_large_ones_in_tiles_then_in_files(tmp_path):
    net, _ = network_case("resnet", {"ngf": 4, "n_blocks": 1, "dropout": True})
    whole = engine_for(net, "reference")
    x = image(256, 320)
    expected = whole.run(x)
    plan, _ = TiledEngine(whole, tile=32).plan_for(256, 320)
    roomy = choose(plan, None, 10**9)
    assert roomy.tile is None and roomy.untiled_bytes < 10**9
    fits = stored_bytes(plan) + tile_bytes(plan, 32)
    assert fits < roomy.untiled_bytes  # at this size tiles need less memory than the whole image
    in_memory = choose(plan, None, fits)
    assert in_memory.tile is not None and not in_memory.disk
    in_files = choose(plan, None, tile_bytes(plan, 32))
    assert in_files.tile is not None and in_files.disk and in_files.tiled_bytes <= tile_bytes(plan, 32)
    for strategy in (in_memory, in_files):
        tiled = TiledEngine(whole, max_memory=strategy.tiled_bytes, folder=tmp_path)
        assert np.abs(tiled.run(x) - expected).max() <= TOLERANCE
        assert tiled.last == strategy
    assert not list(tmp_path.iterdir())  # the activation files are gone after the image
    # A batch that fits runs whole, in one call: bit for bit the plain engine's output.
    small = image(64, 80, batch=2)
    fitting = TiledEngine(whole, max_memory=10**9)
    assert np.array_equal(fitting.run(small), whole.run(small)) and fitting.last.tile is None
    with pytest.raises(TransganError, match="--max-memory 100B: .* raise --max-memory or lower --tile"):
        TiledEngine(whole, max_memory=100).run(x)


def test_converted_reference_unet_and_gan_compression_models_tile_exactly():
    from transgan.convert.gan_compression import load_gan_compression_checkpoint
    from transgan.convert.reference import load_reference_checkpoint

    unet = load_reference_checkpoint(real_data_path("reference_checkpoints", "unet_256_batch_ngf8.pth"), None)
    mobile = load_gan_compression_checkpoint(real_data_path("gan_compression_horse2zebra", "latest_net_G.pth"))
    horse = sorted(real_data_path("horse2zebra", "testA").glob("*.png"))[0]
    pixels = np.asarray(Image.open(horse).convert("RGB"), np.float32) / 127.5 - 1
    for net, mode, (height, width), tile in [(unet, "reference", (256, 256), 64), (mobile, "eval", (92, 120), 32)]:
        whole = engine_for(net, mode)
        x = np.ascontiguousarray(pixels[:height, :width].transpose(2, 0, 1)[None])
        assert np.abs(TiledEngine(whole, tile=tile).run(x) - whole.run(x)).max() <= TOLERANCE


def test_wrong_options_get_one_clear_line(tmp_path):
    assert parse_memory("2GB") == 2 * 2**30 and parse_memory("1.5 MiB") == 3 * 2**19 and parse_memory("4096") == 4096
    for text in ("lots", "-1GB", "2XB", "0"):
        with pytest.raises(TransganError, match="--max-memory"):
            parse_memory(text)
    with pytest.raises(TransganError, match="--tile 8: use at least 16"):
        open_tiled("horse2zebra-mobile", 8, None, device="cpu")
    with pytest.raises(TransganError, match="--engine onnx with --tile"):
        open_tiled("horse2zebra-mobile", 64, None, engine="onnx", device="cpu")
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not read")
    with pytest.raises(TransganError, match="model.onnx: an ONNX graph .* pass the model file"):
        open_tiled(graph, 64, None)

    class Strange(torch.nn.Module):
        def forward(self, x):
            return x

    whole = TorchEngine(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3), Strange()), {"kind": "translator"})
    with pytest.raises(TransganError, match="does not know the layer Strange; run this model without --tile"):
        TiledEngine(whole, tile=32)


def run_cli(*args):
    return CliRunner().invoke(build_app(), [str(arg) for arg in args])


@pytest.fixture(scope="module")
def horses() -> list[Path]:
    return sorted(real_data_path("horse2zebra", "testA").glob("*.png"))[:2]


def test_translate_command_with_tile_writes_what_the_whole_image_gives(tmp_path, horses):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, horse in enumerate(horses):  # odd sizes: the pipeline pads to the size multiple, then crops
        Image.open(horse).convert("RGB").resize((101 + index * 6, 75)).save(folder / f"{index}.png")
    common = ["horse2zebra-mobile", folder, "--device", "cpu"]
    result = run_cli("translate", *common[:2], tmp_path / "tiled", *common[2:], "--tile", 32)
    assert result.exit_code == 0, result.output
    assert "tiles of 32px" in result.output
    assert run_cli("translate", *common[:2], tmp_path / "whole", *common[2:], "--engine", "torch").exit_code == 0
    for index in range(len(horses)):
        tiled = np.asarray(Image.open(tmp_path / "tiled" / f"{index}.png")).astype(int)
        whole = np.asarray(Image.open(tmp_path / "whole" / f"{index}.png")).astype(int)
        assert tiled.shape == whole.shape == (75, 101 + index * 6, 3)
        assert np.abs(tiled - whole).max() <= 1  # float32 rounding may flip a pixel's last unit
    result = run_cli("translate", *common[:2], tmp_path / "bad", *common[2:], "--max-memory", "lots")
    assert isinstance(result.exception, TransganError) and "--max-memory lots" in str(result.exception)


def test_video_clip_translates_with_tile(tmp_path, horses):
    av = pytest.importorskip("av", reason="PyAV is the optional extra `video`")
    from transgan.inference.video import translate_video

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for horse in horses:
            pixels = np.asarray(Image.open(horse).convert("RGB").resize((64, 48)))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    result = run_cli("translate", "horse2zebra-mobile", clip, tmp_path / "out.mp4", "--device", "cpu", "--tile", 16)
    assert result.exit_code == 0, result.output
    assert "tiles of 16px" in result.output and "2 frames" in result.output
    # The library path the command takes, with the engine it opens: frames equal the whole-frame ones.
    tiled = open_translator("horse2zebra-mobile", 16, None, engine="torch", device="cpu")
    summary = translate_video(tiled, clip, tmp_path / "again.mp4", batch_size=2, crf=0)
    assert summary.frames == 2 and tiled.last.tile == 16


def test_serve_answers_with_tiles(horses):
    pytest.importorskip("starlette", reason="the optional extra `serve`")
    uvicorn = pytest.importorskip("uvicorn", reason="the optional extra `serve`")
    from transgan.serve.app import create_app
    from transgan.serve.model import Limits, ServedModel

    tiled = open_translator("horse2zebra-mobile", 32, "64MB", engine="auto", device="cpu")
    whole = open_translator("horse2zebra-mobile", engine="torch", device="cpu")
    served = ServedModel(tiled, "horse2zebra-mobile", Limits(max_body_bytes=500_000, max_side=300, max_samples=4))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(served, 4, 0.0), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        pixels = np.asarray(Image.open(horses[0]).convert("RGB"))[:70, :90]
        upload = io.BytesIO()
        Image.fromarray(pixels).save(upload, format="PNG")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/translate", upload.getvalue(), {"Content-Type": "image/png"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        got = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)
    finally:
        server.should_exit = True
        thread.join(30)
    assert tiled.last.tile == 32 and "tiles of 32px" in served.describe()["engine"]
    # What the whole-image engine makes of the same upload, padded to the size multiple and cropped back.
    padded = to_network(pad_to_multiple(pixels, 4)[None], 0.5, 0.5)
    expected = from_network(whole.run(padded), 0.5, 0.5)[0, :70, :90].astype(int)
    assert got.shape == expected.shape == (70, 90, 3)
    assert np.abs(got - expected).max() <= 1

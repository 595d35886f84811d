"""`transgan serve`: every route, every bad request's status, dynamic batching seen in /info, graceful shutdown."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the optional extra `serve` (pip install -e '.[dev]' brings it)")
uvicorn = pytest.importorskip("uvicorn", reason="the optional extra `serve`")

from transgan.inference.engines import open_engine  # noqa: E402
from transgan.inference.sampling import generate  # noqa: E402
from transgan.models import open_model, resolve_model_path  # noqa: E402
from transgan.serve.app import create_app  # noqa: E402
from transgan.serve.model import Limits, ServedModel, grid  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running(model: ServedModel, max_batch: int = 8, max_wait_ms: float = 0.0):
    """A real uvicorn server for `model` on a free loopback port, in a thread; yields the port."""
    port = free_port()
    config = uvicorn.Config(create_app(model, max_batch, max_wait_ms), host=HOST, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def call(port: int, method: str, path: str, body=None, headers=None, chunked=False):
    """(status, headers, body bytes) of one request."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)


def reference_translation(model: str, pixels: np.ndarray) -> np.ndarray:
    """The model file run directly through torch on H x W x 3 uint8 pixels (no engine, no serving code):
    the independent answer the served and shown images must match."""
    import torch

    from transgan.nets.test_time import test_time

    model_file = open_model(model)
    G, normalization = model_file.primary, model_file.info().normalization
    mean, std = normalization["mean"], normalization["std"]
    x = (torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad(), test_time(G, model_file.info().test_time, seed=0):
        y = G(x)[0]
    return ((y * std + mean) * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().astype(int)


def multipart(data: bytes, field: str = "image", extra: dict | None = None) -> tuple[bytes, dict]:
    boundary = "transgan-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (extra or {}).items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="horse.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def horses(real_data_module):
    """Real horse photos, 64x64 and 96x64 (small: the tests stay fast)."""
    files = sorted(real_data_module("horse2zebra", "testA").glob("*.png"))[:6]
    return [np.asarray(Image.open(f).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)) for f in files]


@pytest.fixture(scope="module")
def real_data_module():
    from conftest import real_data_path

    return real_data_path


@pytest.fixture(scope="module")
def translator():
    engine = open_engine("horse2zebra-mobile", engine="torch", device="cpu")
    return ServedModel(engine, "horse2zebra-mobile", Limits(max_body_bytes=200_000, max_side=300, max_samples=8))


@pytest.fixture(scope="module")
def translator_server(translator):
    with running(translator) as port:
        yield port


def test_translate_info_health_and_page(translator_server, translator, horses):
    port = translator_server
    status, headers, body = call(port, "POST", "/translate", png(horses[0]), {"Content-Type": "image/png"})
    assert status == 200 and headers["content-type"] == "image/png" and headers["x-batch-size"] == "1"
    expected = reference_translation("horse2zebra-mobile", horses[0])
    assert np.abs(decoded(body) - expected).max() <= 1  # what the model file itself makes of that image
    # multipart upload, format by parameter; JPEG by Accept; odd sizes come back at their own size
    status, headers, body = call(port, "POST", "/translate?format=webp", *multipart(png(horses[1])))
    assert status == 200 and headers["content-type"] == "image/webp"
    odd = horses[2][:37, :53]
    status, headers, body = call(port, "POST", "/translate", png(odd), {"Accept": "image/jpeg"})
    assert status == 200 and headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(body)).size == (53, 37)
    status, _, body = call(port, "GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = call(port, "GET", "/info")
    info = json.loads(body)
    assert status == 200 and info["model"]["name"] == "horse2zebra-mobile"
    assert info["model"]["arch"] == "mobile_resnet" and info["model"]["kind"] == "translator"
    assert info["batching"]["requests"] == 3 and info["limits"]["max_side"] == 300
    assert str(resolve_model_path("horse2zebra-mobile")) not in body.decode()  # no server paths shown
    status, headers, page = call(port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'id="drop"' in page
    assert call(port, "GET", "/demo.js")[0] == 200


@pytest.mark.parametrize(
    "case, status",
    [
        ("text body", 415),
        ("not an image", 415),
        ("truncated image", 415),
        ("empty body", 422),
        ("too large declared", 413),
        ("too large chunked", 413),
        ("dimensions too large", 422),
        ("too small", 422),
        ("bad format", 422),
        ("unacceptable Accept", 406),
        ("a server path as parameter", 422),
        ("multipart without a file", 422),
        ("malformed multipart", 422),
        ("generate on a translator", 422),
        ("unknown route", 404),
        ("wrong method", 405),
    ],
)
def test_bad_requests_get_their_status_and_one_json_line(translator_server, horses, case, status):
    image = png(horses[0])
    as_png = {"Content-Type": "image/png"}
    requests = {
        "text body": ("POST", "/translate", b"hello", {"Content-Type": "text/plain"}),
        "not an image": ("POST", "/translate", b"hello, not pixels", as_png),
        "truncated image": ("POST", "/translate", image[: len(image) // 2], as_png),
        "empty body": ("POST", "/translate", b"", as_png),
        "too large declared": ("POST", "/translate", b"\0" * 300_000, as_png),
        "dimensions too large": ("POST", "/translate", png(np.zeros((20, 400, 3), np.uint8)), as_png),
        "too small": ("POST", "/translate", png(np.zeros((2, 2, 3), np.uint8)), as_png),
        "bad format": ("POST", "/translate?format=gif", image, as_png),
        "unacceptable Accept": ("POST", "/translate", image, {**as_png, "Accept": "application/json"}),
        "a server path as parameter": ("POST", "/translate?path=/etc/passwd", image, as_png),
        "multipart without a file": ("POST", "/translate", *multipart(b"x", field="note")[:1], None),
        "malformed multipart": ("POST", "/translate", b"garbage", {"Content-Type": "multipart/form-data; boundary=z"}),
        "generate on a translator": ("POST", "/generate", b"{}", {"Content-Type": "application/json"}),
        "unknown route": ("GET", "/etc/passwd", None, {}),
        "wrong method": ("GET", "/translate", None, {}),
    }
    if case == "too large chunked":  # no Content-Length: refused while streaming
        got, _, body = call(translator_server, "POST", "/translate", iter([b"\0" * 100_000] * 3), as_png, chunked=True)
    elif case == "multipart without a file":
        body, headers = multipart(b"", field="note")
        body = body.replace(b'; filename="horse.png"\r\nContent-Type: image/png', b"")
        got, _, body = call(translator_server, "POST", "/translate", body, headers)
    else:
        got, _, body = call(translator_server, *requests[case])
    answer = json.loads(body)
    assert got == status and answer["status"] == status, answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert "root:" not in body.decode()  # never a server file's content


def test_dynamic_batching_groups_concurrent_requests_of_one_size(translator, horses):
    """4 at once fill a batch of 4; then 2 + 2 of two sizes run as two batches of 2 (sizes never mix)."""
    with running(translator, max_batch=4, max_wait_ms=2000) as port:
        answers: dict[int, tuple] = {}

        def post(index: int, pixels: np.ndarray) -> None:
            answers[index] = call(port, "POST", "/translate", png(pixels), {"Content-Type": "image/png"})

        def at_once(images: list[np.ndarray]) -> None:
            threads = [threading.Thread(target=post, args=(i, image)) for i, image in enumerate(images)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)

        at_once(horses[:4])
        assert [answers[i][1]["x-batch-size"] for i in range(4)] == ["4"] * 4
        for i in range(4):  # each answer is its own image's translation, not a neighbour's
            single = reference_translation("horse2zebra-mobile", horses[i])
            assert np.abs(decoded(answers[i][2]) - single).max() <= 1
        answers.clear()
        wide = [np.concatenate([h, h[:, :32]], axis=1) for h in horses[4:6]]  # 96 x 64
        at_once([horses[4], horses[5], *wide])
        assert [answers[i][1]["x-batch-size"] for i in range(4)] == ["2"] * 4
        assert [Image.open(io.BytesIO(answers[i][2])).size for i in range(4)] == [(64, 64)] * 2 + [(96, 64)] * 2
        batching = json.loads(call(port, "GET", "/info")[2])["batching"]
    assert batching["requests"] == 8 and batching["batches"] == 3
    assert batching["batch_sizes"] == {"2": 2, "4": 1} and batching["largest_batch"] == 4


@pytest.fixture(scope="module")
def sampler_server():
    engine = open_engine("mnist-cgan", engine="torch", device="cpu")
    with running(ServedModel(engine, "mnist-cgan", Limits(max_samples=16)), max_batch=16) as port:
        yield port


def test_generate_matches_the_cli_and_checks_its_parameters(sampler_server):
    port = sampler_server
    as_json = {"Content-Type": "application/json"}
    status, headers, body = call(port, "POST", "/generate", json.dumps({"class": "7", "seed": 3, "n": 4}), as_json)
    assert status == 200 and headers["content-type"] == "image/png" and headers["x-images"] == "4"
    G = open_model("mnist-cgan").primary
    samples = generate(G, [7], 4, seed=3)  # what `transgan generate mnist-cgan --class 7 --n 4 --seed 3` draws
    pixels = np.clip((samples.numpy() * 0.5 + 0.5) * 255 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    got = np.asarray(Image.open(io.BytesIO(body)))
    assert np.abs(got.astype(int) - grid(pixels, 4)[:, :, 0].astype(int)).max() <= 1
    # query parameters and truncation work too; a different seed gives different digits
    status, _, other = call(port, "POST", "/generate?class=7&seed=4&n=4&truncation=0.7")
    assert status == 200 and other != body
    info = json.loads(call(port, "GET", "/info")[2])
    assert info["model"]["class_names"] == [str(k) for k in range(10)] and info["routes"] == ["POST /generate"]
    for params, fragment in [
        ({"class": "12"}, "class '12'"),
        ({"seed": 1}, "class-conditional"),
        ({"class": 1, "n": 0}, "n 0"),
        ({"class": 1, "n": 17}, "n 17"),
        ({"class": 1, "truncation": -1}, "truncation"),
        ({"class": 1, "seed": "abc"}, "seed 'abc'"),
        ({"class": 1, "model": "/etc/passwd"}, "unknown parameter"),
    ]:
        status, _, body = call(port, "POST", "/generate", json.dumps(params), as_json)
        assert status == 422 and fragment in json.loads(body)["error"], (params, body)
    assert call(port, "POST", "/generate", b"{not json", as_json)[0] == 422
    assert call(port, "POST", "/generate", b"[1, 2]", as_json)[0] == 422
    assert call(port, "POST", "/generate", b"x", {"Content-Type": "text/csv"})[0] == 415
    assert call(port, "POST", "/translate", png(np.zeros((8, 8, 3), np.uint8)), {"Content-Type": "image/png"})[0] == 422


def test_serve_command_finishes_requests_in_flight_on_sigterm(tmp_path, horses):
    """`transgan serve` itself: SIGTERM while a request waits in the batcher; it is still answered, exit 0."""
    port = free_port()
    command = [sys.executable, "-m", "transgan", "serve", "horse2zebra-mobile", "--device", "cpu", "--port"]
    command += [str(port), "--max-batch", "4", "--max-wait-ms", "1500", "--log-level", "warning"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the server did not start"
            with contextlib.suppress(OSError):
                if call(port, "GET", "/health")[0] == 200:
                    break
            time.sleep(0.2)
        answer = {}

        def post() -> None:
            answer["r"] = call(port, "POST", "/translate", png(horses[0]), {"Content-Type": "image/png"})

        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(0.5)  # the request now waits in the batcher (up to 1.5 s for others to join)
        server.send_signal(signal.SIGTERM)
        thread.join(60)
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
    assert answer["r"][0] == 200 and answer["r"][1]["content-type"] == "image/png"
    # uvicorn exits by re-raising the signal once the in-flight requests are answered (as a service should).
    assert server.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert "serving horse2zebra-mobile" in out
    with pytest.raises(OSError):
        call(port, "GET", "/health")  # it is gone

"""Pretrained downloads against a local HTTP server: resume after a cut, checks, conversion, errors."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest
import torch

import transgan
from transgan.download import download, sha256_of
from transgan.errors import TransganError
from transgan.pretrained_download import fetch_pretrained


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with HTTP Range support; the first request can be cut halfway, like a dropped link."""

    payload = b""
    cut_first = False
    requests: list[str] = []

    def do_GET(self):
        RangeHandler.requests.append(self.headers.get("Range", ""))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if RangeHandler.cut_first and len(RangeHandler.requests) == 1:
            self.wfile.write(body[: len(body) // 2])
            return  # the connection closes early
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(real_data):
    checkpoint = real_data("reference_checkpoints", "resnet_9blocks_instance_ngf16.pth")
    RangeHandler.payload = checkpoint.read_bytes()
    RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/horse2zebra.pth", checkpoint
    httpd.shutdown()


def test_download_resumes_after_a_cut(server, tmp_path):
    url, checkpoint = server
    RangeHandler.cut_first = True
    with pytest.raises(TransganError, match="stopped at .* run the command again"):
        download(url, tmp_path / "x.pth", progress=False)
    path = download(url, tmp_path / "x.pth", progress=False)
    assert RangeHandler.requests[1].startswith("bytes=") and RangeHandler.requests[1] != "bytes=0-"
    assert sha256_of(path) == sha256_of(checkpoint)


def test_download_rejects_a_wrong_sha256(server, tmp_path):
    url, _ = server
    RangeHandler.cut_first = False
    with pytest.raises(TransganError, match="sha256 does not match"):
        download(url, tmp_path / "y.pth", sha256="0" * 64, progress=False)
    assert not (tmp_path / "y.pth").exists()


def test_pretrained_download_converts_and_reproduces_the_reference(server, tmp_path, monkeypatch, real_data):
    url, _ = server
    RangeHandler.cut_first = False
    monkeypatch.setenv("TRANSGAN_CACHE", str(tmp_path / "cache"))
    path = fetch_pretrained("cyclegan-horse2zebra", url=url, progress=False)
    model = transgan.read_model(path)
    assert model.meta["directions"] == {"AtoB": "G"} and model.meta["task"] == "cyclegan"
    inputs = torch.from_numpy(np.load(real_data("reference_checkpoints", "input_horses.npy")))
    expected = np.load(real_data("reference_checkpoints", "resnet_9blocks_instance_ngf16.eval_output.npy"))
    with torch.no_grad():
        assert np.abs(model.primary(inputs).numpy() - expected).max() < 1e-4
    # the MODEL argument now finds it by name
    from transgan.models import resolve_model_path

    assert resolve_model_path("cyclegan-horse2zebra") == path


def test_unreachable_server_is_one_clear_error(tmp_path):
    with pytest.raises(TransganError, match="cannot reach"):
        download("http://127.0.0.1:9/nothing.pth", tmp_path / "z.pth", progress=False)

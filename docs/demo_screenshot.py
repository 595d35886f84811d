"""Make docs/demo.png and docs/demo-sampler.png: the demo page of `transgan serve` in headless Chromium.

    python docs/demo_screenshot.py [--chromium /usr/bin/chromium]

The translator shot uses a horse drawn here (no photo from a data set ends up in the repository), translated by
the shipped horse2zebra-mobile; the sampler shot uses the shipped mnist-cgan. Both run on CPU, offline.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import sync_playwright

from transgan.inference.engines import open_engine
from transgan.serve.app import create_app
from transgan.serve.model import ServedModel

DOCS = Path(__file__).resolve().parent


def drawn_horse(path: Path) -> Path:
    """A 320x256 cartoon: sky, trees, grass and a brown horse."""
    rng = np.random.default_rng(1)
    width, height, horizon = 320, 256, 110
    pixels = np.zeros((height, width, 3), np.float32)
    t = np.linspace(0, 1, horizon)[:, None, None]
    pixels[:horizon] = np.array([120, 170, 230]) * (1 - t) + np.array([200, 225, 245]) * t
    grass = rng.normal(0, 18, (height - horizon, width, 3)) * np.array([0.6, 1, 0.5])
    pixels[horizon:] = np.array([85, 140, 50]) + grass
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for x in (20, 60, 270, 300):
        draw.ellipse([x - 28, 40, x + 28, 118], fill=(40, 90, 35))
    brown = (110, 70, 40)
    draw.ellipse([100, 120, 220, 175], fill=brown)  # body
    draw.polygon([(200, 135), (225, 85), (245, 90), (222, 150)], fill=brown)  # neck
    draw.ellipse([225, 78, 268, 102], fill=brown)  # head
    draw.polygon([(222, 82), (230, 70), (234, 84)], fill=brown)  # ear
    for x in (112, 130, 190, 205):
        draw.rectangle([x, 160, x + 10, 225], fill=brown)
        draw.rectangle([x - 1, 220, x + 11, 228], fill=(40, 30, 20))
    draw.polygon([(104, 135), (85, 190), (95, 192), (110, 145)], fill=(60, 40, 25))  # tail
    image.filter(ImageFilter.GaussianBlur(0.8)).save(path)
    return path


def serve(model: str) -> tuple[uvicorn.Server, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = ServedModel(open_engine(model, engine="torch", device="cpu"), model)
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def save_small(screenshot: Path, target: Path) -> None:
    """A 256-colour PNG: a screenshot of flat page colours loses nothing visible and shrinks about 2x."""
    image = Image.open(screenshot).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(target, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium)
        server, port = serve("horse2zebra-mobile")
        page = browser.new_page(viewport={"width": 860, "height": 470})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#translator", state="visible")
        page.set_input_files("#file", str(drawn_horse(work / "horse.png")))
        page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=60_000)
        page.screenshot(path=work / "demo.png")
        server.should_exit = True
        server, port = serve("mnist-cgan")
        page = browser.new_page(viewport={"width": 860, "height": 330})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0", timeout=60_000)
        page.screenshot(path=work / "demo-sampler.png")
        server.should_exit = True
        browser.close()
    for name in ("demo.png", "demo-sampler.png"):
        save_small(work / name, DOCS / name)
        print(DOCS / name, (DOCS / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()

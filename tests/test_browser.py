"""The demo page in a real headless Chromium: it loads, an image is submitted, the translated image appears."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the optional extra `serve` (pip install -e '.[dev]' brings it)")

from conftest import real_data_path  # noqa: E402
from test_serve import reference_translation, running  # noqa: E402

from transgan.inference.engines import open_engine  # noqa: E402
from transgan.serve.model import ServedModel  # noqa: E402

REQUIRED = os.environ.get("TRANSGAN_REQUIRE_REAL_DATA") == "1"  # CI: a missing browser is a failure


def chromium() -> str:
    """The system Chromium (Debian: apt-get install chromium); skips without one, fails under CI."""
    found = os.environ.get("TRANSGAN_CHROMIUM") or next(
        (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
    )
    if found is None:
        message = "no Chromium found (apt-get install chromium, or set TRANSGAN_CHROMIUM)"
        if REQUIRED:
            pytest.fail(message + "; CI (TRANSGAN_REQUIRE_REAL_DATA=1) requires the browser test to run")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            pytest.fail("playwright is missing (it comes with pip install -e '.[dev]')")
        pytest.skip("playwright is missing (it comes with pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


def image_bytes(page, selector: str) -> bytes:
    """The bytes behind an <img>'s blob: URL, fetched inside the page."""
    encoded = page.evaluate(
        """async (selector) => {
            const response = await fetch(document.querySelector(selector).src);
            const bytes = new Uint8Array(await response.arrayBuffer());
            let text = "";
            for (const b of bytes) text += String.fromCharCode(b);
            return btoa(text);
        }""",
        selector,
    )
    return base64.b64decode(encoded)


def test_demo_page_translates_a_picked_and_a_dropped_image(browser, tmp_path):
    horses = sorted(real_data_path("horse2zebra", "testA").glob("*.png"))[:2]
    inputs = []
    for index, horse in enumerate(horses):
        path = tmp_path / f"horse{index}.png"
        Image.open(horse).convert("RGB").resize((160, 128), Image.Resampling.BICUBIC).save(path)
        inputs.append(path)
    served = ServedModel(open_engine("horse2zebra-mobile", engine="torch", device="cpu"), "horse2zebra-mobile")
    with running(served) as port:
        page = browser.new_page(viewport={"width": 1000, "height": 620})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#translator", state="visible", timeout=20_000)
        assert "horse2zebra-mobile" in page.inner_text("#model")
        # 1. picked with the file chooser
        page.set_input_files("#file", str(inputs[0]))
        page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=60_000)
        check_output(page, inputs[0])
        # 2. dropped on the drop zone (a real drop event carrying the file)
        page.evaluate(
            """async (b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], "horse1.png", { type: "image/png" }));
                document.getElementById("status").textContent = "";
                document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer }));
            }""",
            base64.b64encode(inputs[1].read_bytes()).decode(),
        )
        page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=60_000)
        check_output(page, inputs[1])
        screenshot = os.environ.get("TRANSGAN_DEMO_SCREENSHOT")  # how docs/demo.png was made
        if screenshot:
            page.screenshot(path=screenshot)
        page.close()


def check_output(page, source: Path) -> None:
    """The page shows the input and, beside it, the server's translation of exactly that image."""
    shown = np.asarray(Image.open(io.BytesIO(image_bytes(page, "#output"))).convert("RGB")).astype(int)
    # the model file run directly through torch, not the serving code that made the shown image
    expected = reference_translation("horse2zebra-mobile", np.asarray(Image.open(source).convert("RGB")))
    assert shown.shape == expected.shape == (128, 160, 3)
    assert np.abs(shown - expected).max() <= 1
    assert page.evaluate("document.getElementById('input').naturalWidth") == 160
    assert page.evaluate("document.getElementById('output').naturalWidth") == 160
    assert "batch of 1" in page.inner_text("#output-caption")


def test_demo_page_of_a_sampler_has_class_seed_truncation_and_a_grid(browser):
    served = ServedModel(open_engine("mnist-cgan", engine="torch", device="cpu"), "mnist-cgan")
    with running(served) as port:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#sampler", state="visible", timeout=20_000)
        assert page.eval_on_selector_all("#class option", "options => options.map(o => o.value)") == [
            str(k) for k in range(10)
        ]
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0", timeout=30_000)
        first = image_bytes(page, "#grid")
        page.select_option("#class", "3")
        page.fill("#seed", "5")
        page.fill("#n", "4")
        page.eval_on_selector("#truncation", "el => { el.value = '0.8'; el.dispatchEvent(new Event('input')); }")
        assert page.inner_text("#truncation-value") == "0.8"
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('seed 5')", timeout=30_000)
        grid = Image.open(io.BytesIO(image_bytes(page, "#grid")))
        assert image_bytes(page, "#grid") != first and grid.size == (4 * 30 + 2, 30 + 2)  # 4 digits of 28 px
        page.close()

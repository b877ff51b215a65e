"""The page of ``fastsr serve`` in a real headless Chromium (Playwright), against uvicorn on a free local port:
upload the bundled example, wait for the result (with tile progress), move the slider, zoom, download the
result and compare it with ``fastsr.upscale``'s, and see a bad file's error on the page. Nothing may be
loaded from anywhere but the server.

Chromium: Debian's ``chromium`` (``playwright install`` cannot download here), or $FASTSR_CHROMIUM. The test
skips only where no Chromium executable or no Playwright is found. With FASTSR_UPDATE_SCREENSHOT=1 it serves
the bundled default model (slower) and writes the README's screenshot, docs/serve.png; otherwise it uses a
tiny random-weight model and writes the screenshot under the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import fastsr
from fastsr.example import example_path
from fastsr.imageio import encode_image, read_image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FASTSR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
UPDATE_SCREENSHOT = os.environ.get("FASTSR_UPDATE_SCREENSHOT") == "1"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM or not Path(CHROMIUM).exists():
        pytest.skip("no Chromium executable found (apt-get install chromium, or set FASTSR_CHROMIUM)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed").sync_playwright


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, model spec, tile, scale) of a uvicorn server in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    from fastsr.serve import create_app

    if UPDATE_SCREENSHOT:
        model, tile, scale = None, 48, 4
    else:
        torch.manual_seed(0)
        model = str(tmp_path_factory.mktemp("browser") / "tiny.safetensors")
        fastsr.save(fastsr.models.build(fastsr.models.EDSRConfig(n_resblocks=1, n_feats=8, scale=2)), model)
        tile, scale = 32, 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model, tile=tile), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", model, tile, scale
    server.should_exit = True
    thread.join(10)


def test_page_upscales_compares_downloads_and_shows_errors(sync_playwright, served, tmp_path):
    base, model, tile, scale = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700}, accept_downloads=True)
            requests, problems = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('scale').options.length > 0")
            assert page.input_value("#scale") == str(scale)
            # Every status line the page shows, to see the tile progress afterwards.
            page.evaluate("""() => { window.seen = []; new MutationObserver(() =>
                window.seen.push(document.getElementById('status').textContent))
                .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true}); }""")
            page.set_input_files("#file", str(example_path()))
            page.click("#go")
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            seen = page.evaluate("window.seen")
            tiles = -(-96 // tile) * -(-128 // tile)
            assert f"tiles {tiles} / {tiles}" in seen, seen
            assert page.text_content("#status").startswith(f"done: \u00d7{scale}")
            assert page.is_hidden("#error")
            w, h = 128 * scale, 96 * scale
            assert page.text_content("#info") == f"{w}\u00d7{h} PNG"

            page.locator("#split").fill("25")  # the slider clips the "before" layer
            assert page.eval_on_selector("#before", "e => e.style.clipPath") == "inset(0px 75% 0px 0px)"
            box = page.locator("#stage").bounding_box()
            page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 10)  # dragging on the image moves it too
            page.mouse.down()
            page.mouse.up()
            assert abs(float(page.input_value("#split")) - 80) < 1.5
            for zoom in ("2", "1"):
                page.select_option("#zoom", zoom)
                stage = page.locator("#stage").bounding_box()
                assert (stage["width"], stage["height"]) == (w * int(zoom), h * int(zoom))
            assert page.eval_on_selector("#before", "e => getComputedStyle(e).imageRendering") == "pixelated"
            assert page.eval_on_selector("#before", "e => [e.naturalWidth, e.width]") == [128, w]

            page.locator("#split").fill("50")
            page.select_option("#zoom", "2")
            shot = ROOT / "docs" / "serve.png" if UPDATE_SCREENSHOT else tmp_path / "serve.png"
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 1000
            if UPDATE_SCREENSHOT:  # 256 colours: a fraction of the bytes in the repository
                from PIL import Image

                Image.open(shot).convert("RGB").quantize(256).save(shot, optimize=True)

            with page.expect_download() as download:
                page.click("#download")
            assert download.value.suggested_filename == f"example_x{scale}.png"
            got = Path(download.value.path()).read_bytes()
            expected = fastsr.upscale(read_image(example_path()), scale, model=model, tile=tile)
            assert got == encode_image(expected, "PNG")

            page.set_input_files("#file", files=[{"name": "bad.png", "mimeType": "image/png",
                                                  "buffer": b"this is not an image"}])
            page.click("#go")
            page.wait_for_selector("#error:not([hidden])")
            assert "cannot read image upload" in page.text_content("#error")
            assert not problems, problems
            outside = [u for u in requests if not u.startswith((base, "blob:", "data:"))]
            assert not outside, outside
        finally:
            browser.close()

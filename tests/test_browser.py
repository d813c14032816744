"""The app in a real browser (Debian's chromium through Playwright): upload a photo, get ranked matches with
heatmaps, pick a result, "More like this", and a search from the (fake) webcam.

MGA_SCREENSHOT=assets/screenshot.png also saves the README's screenshot."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_app import query_photos, server  # noqa: F401 (server is a fixture)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def write_y4m(photo: Path, out: Path, w: int = 320, h: int = 240, frames: int = 5) -> Path:
    """A YUV4MPEG2 4:2:0 clip of a garment photo, for chromium's fake webcam."""
    img = Image.open(photo).convert("RGB")
    img.thumbnail((w, h))
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    canvas.paste(img, ((w - img.width) // 2, (h - img.height) // 2))
    ycc = np.asarray(canvas.convert("YCbCr"))
    y, u, v = ycc[..., 0], ycc[::2, ::2, 1], ycc[::2, ::2, 2]
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes())
    return out


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


def wait_for_results(page, min_results: int = 1) -> int:
    page.wait_for_selector("#mga-results img", timeout=60_000)
    page.wait_for_selector("#mga-query-heatmap img", timeout=60_000)
    page.wait_for_selector("#mga-match-heatmap img", timeout=60_000)
    page.wait_for_selector("#mga-contributions img", timeout=60_000)
    n = page.locator("#mga-results img").count()
    assert n >= min_results
    return n


def test_upload_shows_ranked_matches_with_heatmaps(server, playwright, tmp_path):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1150})
        page.goto(server)
        page.wait_for_selector("#mga-status")
        assert "embedded default" in page.locator("#mga-status").inner_text()
        page.locator("#mga-query input[type=file]").set_input_files(str(query_photos(1)[0]))
        n = wait_for_results(page)
        assert n == 10  # the slider's default
        captions = page.locator("#mga-results .caption-label").all_inner_texts()
        assert captions[0].startswith("#1 ·") and captions[-1].startswith(f"#{n} ·")
        scores = [float(c.split("·")[1]) for c in captions]
        assert scores == sorted(scores, reverse=True)
        assert "#1 · " in page.locator("#mga-detail").inner_text()
        for sel in ("#mga-query-heatmap img", "#mga-match-heatmap img", "#mga-contributions img"):
            assert page.locator(sel).evaluate("img => img.complete && img.naturalWidth > 0"), sel
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("MGA_SCREENSHOT"):
            shutil.copy(shot, os.environ["MGA_SCREENSHOT"])

        # pick the third result: its details; then "More like this" searches with that gallery image
        page.locator("#mga-results .thumbnail-item").nth(2).click()
        page.wait_for_function("() => document.querySelector('#mga-detail').innerText.includes('#3 · ')",
                               timeout=30_000)
        page.locator("#mga-more").click()
        page.wait_for_function(  # a new search: details of its #1, nothing pending
            "() => { const d = document.querySelector('#mga-detail').innerText;"
            "        return d.includes('#1 · ') && !document.body.innerText.includes('processing'); }",
            timeout=60_000)
        wait_for_results(page)
        # the gallery image searched for itself: it is its own best match
        assert page.locator("#mga-results .caption-label").first.inner_text().startswith("#1 ·")
    finally:
        browser.close()


def test_bad_upload_shows_an_error_and_the_app_keeps_working(server, playwright, tmp_path):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(server)
        tiny = tmp_path / "tiny.png"
        Image.open(query_photos(1)[0]).convert("RGB").resize((5, 5)).save(tiny)
        page.locator("#mga-query input[type=file]").set_input_files(str(tiny))
        page.get_by_text("only 5x5 pixels").first.wait_for(timeout=30_000)
        page.reload()  # a fresh page, same server: it must still answer
        page.wait_for_selector("#mga-query input[type=file]", state="attached")
        page.locator("#mga-query input[type=file]").set_input_files(str(query_photos(1)[0]))
        wait_for_results(page)
    finally:
        browser.close()


def test_webcam_capture_searches(server, playwright, tmp_path):
    cam = write_y4m(query_photos(1)[0], tmp_path / "cam.y4m")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS + [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={cam}"])
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1100}, permissions=["camera"])
        page = context.new_page()
        page.goto(server)
        page.locator("#mga-query button[aria-label='Capture from camera']").click()
        page.locator("#mga-query [title='grant webcam access'] button").click()
        page.wait_for_selector("#mga-query video[data-testid=webcam-video]:not(.hide)", timeout=30_000)
        page.wait_for_function("() => document.querySelector('#mga-query video').readyState >= 2", timeout=30_000)
        page.locator("#mga-query button[aria-label='capture photo']").click()
        wait_for_results(page)
        assert "320×240 query" in page.locator("#mga-summary").inner_text()  # the webcam frame was searched
        page.screenshot(path=str(tmp_path / "webcam.png"), full_page=True)
    finally:
        browser.close()

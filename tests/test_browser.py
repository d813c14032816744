"""The app in a real browser (Debian's chromium through Playwright): upload a photo, get ranked matches with
heatmaps, pick a result, "More like this", and a search from the (fake) webcam.

MGA_SCREENSHOT=assets/screenshot.png also saves the README's screenshot."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_server import query_photos

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


def wait_until_idle(page) -> None:
    """Gradio lifts its "processing" overlays a frame after the outputs land; read the page only then."""
    page.wait_for_function("() => !document.body.innerText.includes('processing')", timeout=60_000)


def screenshot(page, tmp_path: Path, name: str) -> None:
    """Full-page screenshot; MGA_SCREENSHOT_DIR=docs/screenshots keeps it for the docs."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MGA_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["MGA_SCREENSHOT_DIR"]) / name)


def box_is(selector: str, test: str) -> str:
    """A page predicate on an element's box `r`, false while the element is not rendered yet."""
    return (f"() => {{ const e = document.querySelector('{selector}'); if (!e) return false;"
            f" const r = e.getBoundingClientRect(); return {test}; }}")


def captions(page) -> list[str]:
    return page.locator("#mga-results .caption-label").all_inner_texts()


def test_upload_shows_ranked_products_with_heatmaps(server, playwright, tmp_path):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server)
        intro = page.locator("#mga-intro").inner_text()
        assert "The shop sells" in intro and "Tees" in intro and "Attention" not in intro  # a shopper's words
        assert not page.locator("#mga-status").is_visible()  # the technical status waits in "About"
        first = page.locator("#mga-examples img").first  # the examples are above the fold
        first.wait_for(timeout=30_000)
        assert first.bounding_box()["y"] + first.bounding_box()["height"] <= 800
        page.locator("#mga-about").get_by_text("About").click()
        page.wait_for_function(  # the accordion renders its content when opened
            "() => (document.querySelector('#mga-status')?.innerText || '').includes('embedded default')")
        page.locator("#mga-query input[type=file]").set_input_files(str(query_photos(1)[0]))
        n = wait_for_results(page)
        assert n == 10  # the slider's default
        names = [c.split(" · ")[0] for c in captions(page)]
        assert len(set(names)) == 10  # one card per product
        for caption in captions(page):  # a shopper's caption: name, colour, confidence; no ids or paths
            assert "id_" not in caption and "/" not in caption and "distractor" not in caption, caption
        assert page.locator("#mga-detail").inner_text().startswith(f"#1 · {names[0]}")
        for sel in ("#mga-query-heatmap img", "#mga-match-heatmap img", "#mga-contributions img"):
            assert page.locator(sel).evaluate("img => img.complete && img.naturalWidth > 0"), sel
        screenshot(page, tmp_path, "desktop-1280x800.png")
        if os.environ.get("MGA_SCREENSHOT"):
            shutil.copy(tmp_path / "desktop-1280x800.png", os.environ["MGA_SCREENSHOT"])

        # the photos show the whole match first; the overall look alone redraws both heatmaps
        shown = {sel: page.locator(f"{sel} img").get_attribute("src") for sel in ("#mga-query-heatmap",
                                                                                  "#mga-match-heatmap")}
        page.locator("#mga-term label", has_text="overall look").click()
        for sel, src in shown.items():
            page.wait_for_function(f"() => document.querySelector('{sel} img').src !== {json.dumps(src)}",
                                   timeout=60_000)

        # pick the third result: its details; then "More like this" searches with that product's photo
        page.locator("#mga-results .thumbnail-item").nth(2).click()
        page.wait_for_function("() => (document.querySelector('#mga-detail')?.innerText || '').startsWith('#3 · ')",
                               timeout=30_000)
        assert page.locator("#mga-results caption.caption").inner_text().startswith(names[2])  # its large view
        page.locator("#mga-more").click()
        more_like = json.dumps("More like " + names[2])
        page.wait_for_function(  # a new search: the other products like it, nothing pending
            f"() => (document.querySelector('#mga-summary')?.innerText || '').includes({more_like})"
            f"      && !document.body.innerText.includes('processing')", timeout=60_000)
        wait_for_results(page)
        assert page.locator("#mga-detail").inner_text().startswith("#1 · ")
        assert names[2] not in page.locator("#mga-results").inner_text()  # not the product itself again
        page.wait_for_function("() => !document.querySelector('#mga-results caption.caption')",  # no large view
                               timeout=30_000)                                        # left of the last search
    finally:
        browser.close()


def test_bad_files_get_one_message_and_clear_the_results(server, playwright, tmp_path):
    """Each bad file: the app's own one-line message (as the API gives it), once, no server path, the photo box
    emptied and the previous results gone; then a good photo searches again."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("this is a text file, not a photo\n" * 10)
    (bad / "empty.jpg").write_bytes(b"")
    Image.new("1", (12000, 12000)).save(bad / "bomb.png")  # 144 MP in a few hundred kB
    Image.open(query_photos(1)[0]).convert("RGB").resize((5, 5)).save(bad / "tiny.png")
    expected = {"notes.jpg": "not an image file", "empty.jpg": "empty", "bomb.png": "pixels",
                "tiny.png": "only 5x5 pixels"}
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server)
        for name, message in expected.items():
            page.locator("#mga-query input[type=file]").set_input_files(str(query_photos(1)[0]))
            wait_for_results(page)
            page.locator("#mga-query input[type=file]").set_input_files(str(bad / name))
            page.locator("#mga-error").get_by_text(message).wait_for(timeout=60_000)
            page.wait_for_function("() => !document.querySelector('#mga-query img')", timeout=60_000)  # no broken image
            wait_until_idle(page)  # the emptied box searches once more; the message stays through it
            assert message in page.locator("#mga-error").inner_text(), name  # emptying the box kept the message
            said, text = page.locator("#mga-error").inner_text().strip(), page.locator("body").inner_text()
            assert said.startswith("⚠️ query image:") and text.count(said) == 1, (name, text)  # once: no toast
            assert page.locator(".toast-body").count() == 0, name  # no raw Gradio error
            assert "/tmp" not in text and "gradio" not in page.locator("#mga-error").inner_text().lower()
            page.wait_for_function("() => !document.querySelector('#mga-results img')", timeout=60_000)  # cleared
        page.locator("#mga-query input[type=file]").set_input_files(str(query_photos(1)[0]))
        wait_for_results(page)
        wait_until_idle(page)
        assert page.locator("#mga-error").inner_text().strip() == ""
    finally:
        browser.close()


def test_phone_layout_shows_the_results_without_sideways_scrolling(server, playwright, tmp_path):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page.goto(server)
        photo_box = page.locator("#mga-query").bounding_box()  # the photo box is on the first screen, whole
        assert photo_box["y"] >= 0 and photo_box["y"] + photo_box["height"] <= 844, photo_box
        page.locator("#mga-query input[type=file]").set_input_files(str(query_photos(1)[0]))
        assert wait_for_results(page) == 10
        page.wait_for_function(box_is("#mga-results", "r.top >= -1 && r.top < window.innerHeight / 2"),
                               timeout=30_000)  # the search scrolled the results into view
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for i in range(10):  # every card within the screen's width
            box = page.locator("#mga-results .thumbnail-item").nth(i).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (i, box)
        screenshot(page, tmp_path, "phone-390x844.png")
        bad = tmp_path / "notes.jpg"  # then a bad file: its one line (under the photo, far above) comes into view
        bad.write_text("not a photo\n" * 5)
        page.locator("#mga-query input[type=file]").set_input_files(str(bad))
        page.locator("#mga-error").get_by_text("query image").wait_for(timeout=60_000)
        page.wait_for_function(box_is("#mga-error", "r.top >= -1 && r.bottom <= window.innerHeight"), timeout=30_000)
    finally:
        browser.close()


def test_crop_by_hand_searches_the_box_between_two_clicks(server, playwright, tmp_path):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        photo = query_photos(1)[0]
        w, h = Image.open(photo).size
        page.locator("#mga-query input[type=file]").set_input_files(str(photo))
        wait_for_results(page)
        page.get_by_text("Crop by hand").click()
        view = page.locator("#mga-cropper img")
        view.wait_for()
        view.scroll_into_view_if_needed()
        page.locator("#mga-search-cropped").click()  # no corners yet: the line saying so comes into view
        page.locator("#mga-error").get_by_text("click two opposite corners").wait_for(timeout=60_000)
        page.wait_for_function(box_is("#mga-error", "r.top >= 0 && r.bottom <= window.innerHeight"), timeout=30_000)
        view.scroll_into_view_if_needed()
        box = view.bounding_box()
        # two opposite corners at 20 % and 70 % of the shown photo (object-fit keeps it whole in the box)
        shown = page.evaluate("img => [img.naturalWidth, img.naturalHeight]", view.element_handle())
        fit = min(box["width"] / shown[0], box["height"] / shown[1])
        left, top = (box["width"] - shown[0] * fit) / 2, (box["height"] - shown[1] * fit) / 2
        for fx, fy in ((0.2, 0.2), (0.7, 0.7)):
            before = view.get_attribute("src")
            view.click(position={"x": left + fx * shown[0] * fit, "y": top + fy * shown[1] * fit})
            # the view redraws with the corner (a dot, then the box) before the next click
            page.wait_for_function("s => document.querySelector('#mga-cropper img')?.src !== s", arg=before,
                                   timeout=30_000)
        page.locator("#mga-search-cropped").click()
        page.wait_for_function(
            "() => /for a \\d+×\\d+ photo/.test((document.querySelector('#mga-summary')?.innerText || '')) &&"
            f" !(document.querySelector('#mga-summary')?.innerText || '').includes('{w}×{h} photo')", timeout=60_000)
        size = page.locator("#mga-summary").inner_text().split(" for a ")[1].split(" photo")[0]
        cw, ch = (int(v) for v in size.split("×"))
        assert abs(cw - 0.5 * w) <= 0.03 * w and abs(ch - 0.5 * h) <= 0.03 * h, ((cw, ch), (w, h))
        # a colour chosen after the crop searches the crop again, in that colour, not the whole photo
        page.locator("#mga-colour input").fill("Black")
        page.keyboard.press("Enter")
        page.wait_for_function("() => [...document.querySelectorAll('#mga-results .caption-label')].every("
                               "c => c.innerText.includes('Black')) && !document.body.innerText.includes('processing')",
                               timeout=60_000)
        assert f"for a {size} photo" in page.locator("#mga-summary").inner_text()
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
        wait_until_idle(page)
        assert "320×240 photo" in page.locator("#mga-summary").inner_text()  # the webcam frame was searched
        page.screenshot(path=str(tmp_path / "webcam.png"), full_page=True)
    finally:
        browser.close()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_a_photo_of_a_top_and_bottoms_offers_each_garment(server, playwright, tmp_path, viewport):
    """A shop photo of a tee over shorts: the search finds the tee, and offers the bottoms, outlined on the photo;
    picking them searches their region among the shop's bottoms only, and picking the top searches it again."""
    photo = Path(__file__).parents[1] / "assets" / "examples" / "tees-ryker-lumatech-tee-v-neck.jpg"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport=viewport, is_mobile=viewport["width"] < 500)
        page.goto(server)
        page.locator("#mga-query input[type=file]").set_input_files(str(photo))
        wait_for_results(page)
        page.locator("#mga-garments").wait_for(state="visible", timeout=60_000)
        assert page.locator("#mga-garment-view img").evaluate("img => img.complete && img.naturalWidth > 0")
        assert page.locator("#mga-garment input:checked").get_attribute("value") == "top"
        assert "Tees" in page.locator("#mga-detail").inner_text()
        page.locator("#mga-garment label", has_text="Bottoms").click()
        page.wait_for_function(
            "() => (document.querySelector('#mga-summary')?.innerText || '').includes('the bottoms of your photo')"
            "      && !document.body.innerText.includes('processing')", timeout=60_000)
        wait_for_results(page)
        detail = page.locator("#mga-detail").inner_text()
        assert " · Shorts" in detail or " · Pants" in detail, detail
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        screenshot(page, tmp_path, f"garments-{viewport['width']}x{viewport['height']}.png")
        page.locator("#mga-garment label", has_text="Top").click()  # back to the whole photo's garment
        page.wait_for_function(
            "() => !(document.querySelector('#mga-summary')?.innerText || '').includes('the bottoms of your photo')"
            "      && !document.body.innerText.includes('processing')", timeout=60_000)
        assert "Tees" in page.locator("#mga-detail").inner_text()
    finally:
        browser.close()

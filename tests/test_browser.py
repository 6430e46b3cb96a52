"""The real app in headless Chromium: every page opens, a drawn digit gets heatmaps, no exception box.

Also (issue 15): a trained model survives a reload (the workspace in the URL), and at a
projector's 1280x720 and 1024x768 the Explain page shows the canvas, the prediction and the
heatmaps of the default methods without scrolling (bounding boxes against the viewport).
Screenshots of every page go to assets/screenshots/ (committed; the README shows them).
Skipped when /usr/bin/chromium or the playwright package is missing (``playwright install``
is never run).
"""

from __future__ import annotations

import os
import time

import pytest
from appserver import CHROMIUM, CHROMIUM_ARGS, EXCEPTION, IDLE_JS, ROOT, streamlit_server

pytestmark = pytest.mark.browser

SHOTS = ROOT / "assets" / "screenshots"
VIEWPORT = {"width": 1280, "height": 720}  # a projector


@pytest.fixture(scope="module")
def sync_playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium to run the browser test)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def app_url(sync_playwright, tmp_path_factory):
    """``streamlit run streamlit_app.py`` on a free loopback port with an empty cache."""
    log = tmp_path_factory.mktemp("log") / "streamlit.log"
    with streamlit_server(tmp_path_factory.mktemp("xwp-cache"), log) as url:
        yield url


def wait_idle(page, timeout: float = 120) -> None:
    """Wait until the script run ends (the 'running' indicator is gone) and check for exception boxes."""
    page.wait_for_timeout(400)
    page.wait_for_function(IDLE_JS, timeout=timeout * 1000)
    page.wait_for_timeout(300)
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()


def wait_images(page, timeout: float = 30) -> None:
    """Wait until every image of the page has loaded."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=timeout * 1000,
    )


def goto(page, title: str) -> None:
    """Open a page through the sidebar navigation (the session and its models are kept)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    page.get_by_role("heading", level=1).first.wait_for()
    wait_idle(page)


def shoot(page, name: str) -> None:
    """Save a viewport screenshot of the current page."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    wait_images(page)
    page.mouse.move(5, 5)
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def draw_digit(page) -> None:
    """Draw a '7' with the mouse on the drawing canvas (plain page or iframe, whichever the component uses)."""
    canvas = page.locator("canvas.upper-canvas")
    if canvas.count() == 0:
        canvas = page.frame_locator("iframe").locator("canvas.upper-canvas")
    canvas.first.wait_for(timeout=30_000)
    box = canvas.first.bounding_box()
    x0, y0 = box["x"], box["y"]
    strokes = [[(70, 60), (210, 60)], [(210, 60), (180, 120), (150, 180), (125, 240)]]
    for stroke in strokes:
        page.mouse.move(x0 + stroke[0][0], y0 + stroke[0][1])
        page.mouse.down()
        for (ax, ay), (bx, by) in zip(stroke, stroke[1:], strict=False):
            for t in range(1, 11):
                page.mouse.move(x0 + ax + (bx - ax) * t / 10, y0 + ay + (by - ay) * t / 10)
        page.mouse.up()
        page.wait_for_timeout(400)


def box_of(page, locator) -> dict:
    """The bounding box of the first visible element of ``locator`` (fails when there is none)."""
    for k in range(locator.count()):
        box = locator.nth(k).bounding_box()
        if box and box["width"] > 0 and box["height"] > 0:
            return box
    raise AssertionError(f"nothing visible for {locator}")


def check_explain_fits(page, width: int, height: int) -> None:
    """Canvas, prediction chart and the five tiles (input + 4 default maps) lie inside the viewport unscrolled."""
    page.set_viewport_size({"width": width, "height": height})
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(1500)  # columns and the chart settle after a resize
    wait_images(page)
    canvas = box_of(page, page.locator("canvas.upper-canvas, iframe"))
    chart = box_of(page, page.locator('[data-testid="stVegaLiteChart"]'))
    tiles = page.locator('[data-testid="stMainBlockContainer"] [data-testid="stImage"] img')
    assert tiles.count() >= 5
    boxes = {"canvas": canvas, "prediction": chart} | {f"tile {k}": tiles.nth(k).bounding_box() for k in range(5)}
    for name, b in boxes.items():
        assert b["y"] >= 0 and b["y"] + b["height"] <= height + 1, f"{width}x{height}: {name} at {b}"
        assert b["x"] >= 0 and b["x"] + b["width"] <= width + 1, f"{width}x{height}: {name} at {b}"
    assert canvas["width"] >= 270 and canvas["height"] >= 270, f"{width}x{height}: canvas cut to {canvas}"
    upload = page.get_by_role("radio", name="Upload", exact=True).first
    methods = box_of(page, page.get_by_role("button", name="Methods"))
    up = upload.bounding_box()
    assert up["x"] + up["width"] <= methods["x"], f"{width}x{height}: the Upload choice is clipped: {up}"
    page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2)  # shows the toolbar
    page.wait_for_timeout(300)
    on_top = upload.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
        " return e.contains(hit) || hit.contains(e); }"
    )
    assert on_top, "the canvas toolbar covers the Upload button"


def test_every_page_in_chromium(sync_playwright, app_url):
    started = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)  # generous: a busy CI machine can be slow
        try:
            page.goto(app_url)
            # First open with an empty cache: the default model trains, then the sidebar shows it.
            page.get_by_text("Test accuracy").first.wait_for(timeout=180_000)
            ready = time.time() - started
            wait_idle(page)
            assert page.get_by_role("heading", name="XWP explainer").count() == 1
            page.locator('[data-testid="stImage"] img').first.wait_for()
            shoot(page, "home")

            goto(page, "Train")
            epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
            epochs.fill("2")
            epochs.press("Tab")
            page.get_by_role("button", name="Train", exact=True).click()
            done = page.get_by_text("for 2 epochs", exact=False).first
            done.wait_for(timeout=120_000)
            wait_idle(page)
            page.locator('[data-testid="stMetric"]').first.wait_for()
            assert page.get_by_text("typeface 784-400-100-10").count() >= 1  # the new model is the active one
            done.evaluate("e => e.scrollIntoView({block: 'start'})")  # the result: curves and confusion matrix
            shoot(page, "train")

            # Reload (F5): the model was saved to the workspace named in the URL and comes back.
            assert "workspace=" in page.url, page.url
            url = page.url
            page.reload()
            page.get_by_text("Test accuracy").first.wait_for(timeout=60_000)
            wait_idle(page)
            assert page.url == url
            assert page.get_by_text("typeface 784-400-100-10").count() >= 1, "the trained model survived the reload"
            page.get_by_text("Workspace: 1 model", exact=False).first.click()  # open the sidebar's list
            page.wait_for_timeout(500)
            shoot(page, "workspace-after-reload")

            goto(page, "Weights")
            page.locator('[data-testid="stImage"] img').first.wait_for()
            page.locator('[data-testid="stSelectbox"]', has_text="Order").locator("input").click()
            page.get_by_role("option", name="Strongest drive of a class first").click()
            wait_idle(page)
            page.get_by_role("radio", name="Change", exact=True).click()  # trained minus initial: the strokes
            wait_idle(page)
            page.get_by_text("Training replay").first.wait_for()
            page.wait_for_timeout(1000)
            wait_idle(page)
            shoot(page, "weights")
            page.get_by_text("Training replay").first.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            shoot(page, "weights-replay")

            goto(page, "Explain")
            page.get_by_text("Draw a digit", exact=False).first.wait_for()
            draw_digit(page)
            page.get_by_text("Time per method", exact=False).first.wait_for(timeout=60_000)
            wait_idle(page)
            assert page.get_by_text("Draw a digit on the black canvas", exact=False).count() == 0
            check_explain_fits(page, 1280, 720)  # the drawing, the probabilities and the heatmaps in one view
            shoot(page, "explain")
            check_explain_fits(page, 1024, 768)
            shoot(page, "explain-1024x768")
            page.set_viewport_size(VIEWPORT)
            page.get_by_text("Presentation mode").first.click()
            wait_idle(page)
            page.evaluate("window.scrollTo(0, 0)")
            shoot(page, "explain-presentation")
            page.get_by_text("Presentation mode").first.click()
            wait_idle(page)

            goto(page, "Compare")
            n = page.get_by_role("spinbutton", name="Test images", exact=True)
            n.fill("8")
            n.press("Tab")
            page.get_by_role("button", name="Run comparison").click()
            page.get_by_text("Evaluation took", exact=False).first.wait_for(timeout=180_000)
            wait_idle(page)
            assert page.locator('[data-testid="stDataFrame"]').count() == 2  # the table and the significance matrix
            page.get_by_text("Only images the model classifies correctly").evaluate(
                "e => e.scrollIntoView({block: 'start'})"
            )
            shoot(page, "compare")
        except Exception:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "failure.png"))  # what the page showed when the test failed
            raise
        finally:
            browser.close()
    print(f"default model ready after {ready:.1f} s; whole browser test {time.time() - started:.1f} s")

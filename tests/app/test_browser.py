"""The real app in headless Chromium: every page opens, a drawn digit gets heatmaps, no exception box.

Also: a training of several epochs keeps running when the user opens another page
(the sidebar shows its progress advancing and a Stop button there, and the model arrives with
all its epochs), a trained model survives a reload (the workspace in the URL), and at a
projector's 1280x720 and 1024x768 the Explain page shows the canvas, the prediction and the
heatmaps of the default methods without scrolling (bounding boxes against the viewport).
Last, a small CNN is trained and Weights shows its first-layer kernels.
Screenshots of every page go to assets/screenshots/ (committed; the README shows them).
Skipped when /usr/bin/chromium or the playwright package is missing (``playwright install``
is never run).
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from tests.support.server import CHROMIUM, CHROMIUM_ARGS, EXCEPTION, IDLE_JS, ROOT, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a real server and Chromium: over a minute

SHOTS = ROOT / "assets" / "screenshots"
VIEWPORT = {"width": 1280, "height": 720}  # a projector
MODEL = "ten epochs"  # the training that outlives a page change (a 10-epoch run once stopped after epoch 1)
EPOCHS, BATCH = 10, 16  # small batches: tens of seconds even on an idle machine, still running after the change


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


def job_text(locator) -> str:
    """The text of a sidebar job's progress bar ("" when it is gone)."""
    try:
        return locator.inner_text(timeout=2000)
    except Exception:  # noqa: BLE001 - redrawn or ended between two looks
        return ""


def active_model(page) -> str:
    """What the sidebar's "Active model" box shows (its text and its input's value)."""
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]', has_text="Active model").first
    return box.evaluate("e => e.innerText + ' ' + [...e.querySelectorAll('input')].map(i => i.value).join(' ')")


def wait_until(condition, timeout: float, message: str) -> None:
    """Poll ``condition()`` every 0.5 s until it is true; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, message
        time.sleep(0.5)


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
    with contextlib.suppress(Exception):  # a toast ("Training of … ended") covers the top right; gone after 4 s
        page.locator('[data-testid="stToast"]').first.wait_for(state="detached", timeout=10_000)
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
    """Canvas, probability bars and the five tiles (input + 4 default maps) lie inside the viewport unscrolled."""
    page.set_viewport_size({"width": width, "height": height})
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(1500)  # columns and the chart settle after a resize
    wait_images(page)
    canvas = box_of(page, page.locator("canvas.upper-canvas, iframe"))
    chart = box_of(page, page.locator('[aria-label="Predicted probabilities"]'))
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
            # A fresh server: the app's navigation from the start, never Streamlit's list of pages/
            # ("streamlit app, compare, explain, ...") while the first run imports torch
            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.wait_for(timeout=60_000)
            seen = []
            for _ in range(12):
                seen.append(nav.inner_text())
                page.wait_for_timeout(250)
            # before the router drew it first, the list stayed 2-13 s (8 or more samples); a single
            # sample may still catch the instant between Streamlit's message and the router's
            assert sum("streamlit app" in s for s in seen) <= 1, seen
            assert "Explain" in seen[-1], seen[-1]
            # First open with an empty cache: the default model trains, then the sidebar shows it.
            page.get_by_text("Test accuracy").first.wait_for(timeout=180_000)
            ready = time.time() - started
            wait_idle(page)
            assert page.get_by_role("heading", name="XWP explainer").count() == 1
            page.locator('[data-testid="stImage"] img').first.wait_for()
            shoot(page, "home")

            # A training is a job that outlives a page change (it used to stop after epoch 1):
            # start 10 epochs on Train, open Explain at once, watch it advance in the sidebar, and get all 10.
            goto(page, "Train")
            page.get_by_role("textbox", name="Model name").fill(MODEL)
            for label, value in (("Epochs", EPOCHS), ("Batch size", BATCH)):
                box = page.get_by_role("spinbutton", name=label, exact=True)
                box.fill(str(value))
                box.press("Tab")
            page.get_by_role("button", name="Train", exact=True).click()
            page.get_by_role("button", name="Stop training").wait_for(timeout=60_000)  # the Train page's panel
            goto(page, "Explain")  # the page change, while the job runs
            sidebar = page.locator('[data-testid="stSidebar"]')
            job = sidebar.locator('[data-testid="stProgress"]', has_text=MODEL).first
            job.wait_for(timeout=30_000)
            page.get_by_text("Draw a digit", exact=False).first.wait_for()
            first = job_text(job)
            assert "epoch" in first or "waiting" in first or "starting" in first, first
            assert sidebar.get_by_role("button", name="Stop").count() >= 1, "no Stop button beside the job"
            wait_until(lambda: job_text(job) != first, 60, f"the job did not advance on Explain: {first!r}")
            assert "epoch" in job_text(job), job_text(job)
            shoot(page, "job-in-sidebar")
            print(f"on Explain, the sidebar read: {job_text(job)!r}")
            job.wait_for(state="detached", timeout=300_000)  # the job ended; the sidebar lists the model
            wait_until(lambda: MODEL in active_model(page), 60, "the trained model is not the sidebar's active model")
            wait_idle(page)
            goto(page, "Train")
            done = page.get_by_text(f"{MODEL} for {EPOCHS} epochs", exact=False).first
            done.wait_for(timeout=30_000)  # all epochs, not stopped after the first
            metric = page.locator('[data-testid="stMetric"]', has_text="Epochs")
            assert metric.inner_text().split()[-1] == str(EPOCHS), metric.inner_text()
            assert page.get_by_text("was stopped", exact=False).count() == 0
            done.evaluate("e => e.scrollIntoView({block: 'start'})")  # the result: curves and confusion matrix
            shoot(page, "train")

            # Reload (F5): the model was saved to the workspace named in the URL and comes back.
            assert "workspace=" in page.url, page.url
            url = page.url
            page.reload()
            page.get_by_text("Test accuracy").first.wait_for(timeout=60_000)
            wait_idle(page)
            assert page.url == url
            assert MODEL in active_model(page), "the trained model did not survive the reload"
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
            # the default table (faithfulness metrics, no medians) fits 1280 px: nothing inside it scrolls sideways
            overflow = page.locator('[data-testid="stDataFrame"] .dvn-scroller').first.evaluate(
                "s => s.scrollWidth - s.clientWidth"  # the grid's own scroller (glide-data-grid)
            )
            assert overflow <= 1, f"the Compare table scrolls sideways by {overflow} px at 1280 px"
            page.locator("h3", has_text="8 test images").first.evaluate("e => e.scrollIntoView({block: 'start'})")
            shoot(page, "compare")  # the view controls and the whole table with its intervals

            # A small CNN: its first convolution's kernels on Weights, initial | trained | change.
            goto(page, "Train")
            page.locator('[data-testid="stButtonGroup"]').get_by_text("CNN", exact=True).click()
            wait_idle(page)
            page.get_by_role("textbox", name="Model name").fill("small cnn")
            for label, value in (("Dense head sizes", "32"), ("Conv channels", "8,16")):
                page.get_by_role("textbox", name=label, exact=True).fill(value)
            epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
            epochs.fill("2")
            epochs.press("Tab")
            page.get_by_role("button", name="Train", exact=True).click()
            page.get_by_text("small cnn for 2 epochs", exact=False).first.wait_for(timeout=180_000)
            wait_idle(page)
            goto(page, "Weights")
            page.get_by_text("convolution kernels", exact=False).first.wait_for()
            page.locator('[data-testid="stImage"] img').first.wait_for()
            wait_idle(page)
            shoot(page, "weights-cnn")
        except Exception:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "failure.png"))  # what the page showed when the test failed
            raise
        finally:
            browser.close()
    print(f"default model ready after {ready:.1f} s; whole browser test {time.time() - started:.1f} s")

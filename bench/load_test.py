"""Load test: many concurrent browser sessions on one app server, through Explain and Compare.

    python -m bench.load_test [--sessions 20] [--out docs/results/load_test.md]

Starts ``streamlit run streamlit_app.py`` on a free loopback port (the default model is
trained first, so sessions measure the warm app), then drives ``--sessions`` Playwright
browser contexts at once in Debian's Chromium. Each session:

1. opens the app and waits for the sidebar (its default model);
2. trains a tiny model named after itself (1 epoch on scikit-learn's digits);
3. on Explain, draws a digit and waits for the heatmaps (timed from the stroke's mouse-up until
   the caption under the maps is there and every image on the page has loaded; the drawing
   itself, Playwright's mouse moves, is reported on its own line);
4. draws a second stroke and waits for the updated maps (timed the same way);
5. on Compare, runs the page's default methods on 8 test images (timed);
6. checks that its model list holds its own model and no other session's (isolation).

Reports errors (exception boxes, timeouts, foreign models), p50/p95 of each timing and the CPU
time the browsers, the server and everything else used meanwhile (from /proc),
bounded by ``--timeout`` per step. ``--trace DIR`` keeps every page's websocket timeline
(tests/support/ws_trace.py) and adds to a failed session's error whether the browser sent the drawing
after its last stroke. Never runs ``playwright install``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.speed import write_report
from tests.support.server import CHROMIUM, CHROMIUM_ARGS, EXCEPTION, IDLE_JS, streamlit_server
from tests.support.ws_trace import Trace

ROOT = Path(__file__).resolve().parents[1]

#: how often a waiting page re-checks its condition (ms; ``--poll-ms``, 0: Playwright's default of
#: every animation frame). Polling every frame makes a waiting page render 60 frames a second:
#: 8-14 % of a core per page measured, 0.6-1.4 % polling every 100 ms (bench/browser_cost.py);
#: 20 pages waiting at once ask for 1.6-2.8 cores for the harness alone. Polling every 50 ms
#: bounds the error of a measured latency by 50 ms.
POLL_MS: int | str = 50
#: where ``--trace`` writes one timeline per session (None: no tracing)
TRACE_DIR: Path | None = None


async def idle(page, timeout):
    await page.wait_for_timeout(300)
    await page.wait_for_function(IDLE_JS, timeout=timeout * 1000, polling=POLL_MS)
    if await page.locator(EXCEPTION).count():
        raise RuntimeError("exception box: " + (await page.locator(EXCEPTION).first.inner_text())[:200])


async def goto(page, title, timeout):
    await page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    await page.get_by_role("heading", level=1).first.wait_for(timeout=timeout * 1000)
    await idle(page, timeout)


#: true once every image on the page has loaded (the heatmap tiles arrive as separate requests)
IMAGES_LOADED_JS = "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"


async def open_app(page, url, timeout):
    """Open the app and wait until its default model is shown and the run has ended."""
    await page.goto(url)
    await page.get_by_text("Test accuracy").first.wait_for()
    await idle(page, timeout)


async def prepare_comparison(page, n, timeout):
    """Open Compare and ask for ``n`` test images (the Run comparison button is the caller's)."""
    await goto(page, "Compare", timeout)
    box = page.get_by_role("spinbutton", name="Test images", exact=True)
    await box.fill(str(n))
    await box.press("Tab")
    await idle(page, timeout)


async def stroke(page, points):
    """Draw one stroke through ``points`` on the canvas; return the time of the mouse-up (the stroke's end)."""
    canvas = page.locator("canvas.upper-canvas").first
    await canvas.wait_for()
    box = await canvas.bounding_box()
    await page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    await page.mouse.down()
    for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
        for t in range(1, 9):
            await page.mouse.move(box["x"] + ax + (bx - ax) * t / 8, box["y"] + ay + (by - ay) * t / 8)
    await page.mouse.up()
    return time.perf_counter()


async def session(i, browser, url, timeout, results, compare_timeout=None):
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    page.set_default_timeout(timeout * 1000)
    rec = {"session": i, "error": ""}
    trace = Trace(f"session-{i}").attach(page) if TRACE_DIR else None
    up = None
    try:
        t0 = time.perf_counter()
        await open_app(page, url, timeout)
        rec["open_s"] = time.perf_counter() - t0

        await goto(page, "Train", timeout)
        await page.locator('[data-testid="stSelectbox"]', has_text="Dataset").locator("input").first.click()
        await page.get_by_role("option", name="scikit-learn digits", exact=False).first.click()
        await idle(page, timeout)
        epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
        await epochs.fill("1")
        await epochs.press("Tab")
        name = page.get_by_role("textbox", name="Model name", exact=False)
        await name.fill(f"user-{i}")
        await name.press("Tab")
        await idle(page, timeout)
        await page.get_by_role("button", name="Train", exact=True).click()
        await page.get_by_text("for 1 epochs", exact=False).first.wait_for()
        await idle(page, timeout)

        await goto(page, "Explain", timeout)
        t0 = time.perf_counter()
        up = await stroke(page, [(70, 60), (210, 60), (150, 170), (120, 240)])
        if trace:
            trace.mark("first stroke up")
        await page.get_by_text("Time per method", exact=False).first.wait_for()
        await page.wait_for_function(IMAGES_LOADED_JS, polling=POLL_MS)
        rec["explain_first_s"] = time.perf_counter() - up
        rec["draw_first_s"] = up - t0
        await idle(page, timeout)
        caption = page.get_by_text("Time per method", exact=False).first
        before = await caption.inner_text()
        t0 = time.perf_counter()
        up = await stroke(page, [(100, 150), (200, 150)])
        if trace:
            trace.mark("second stroke up")
        await page.wait_for_function(
            "(b) => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
            ".some(e => e.innerText.includes('Time per method') && e.innerText !== b)",
            arg=before,
            polling=POLL_MS,
        )
        await page.wait_for_function(IMAGES_LOADED_JS, polling=POLL_MS)
        rec["explain_update_s"] = time.perf_counter() - up
        rec["draw_update_s"] = up - t0
        await idle(page, timeout)

        await prepare_comparison(page, 8, timeout)
        t0 = time.perf_counter()
        await page.get_by_role("button", name="Run comparison").click()
        done = page.get_by_text("Evaluation took", exact=False).first
        await done.wait_for(timeout=(compare_timeout or timeout) * 1000)
        await idle(page, timeout)
        rec["compare_s"] = time.perf_counter() - t0

        await page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
        options = [o.strip() for o in await page.get_by_role("option").all_inner_texts()]
        await page.keyboard.press("Escape")
        foreign = [o for o in options if o.startswith("user-") and o != f"user-{i}"]
        if f"user-{i}" not in options or foreign:
            rec["error"] = f"isolation: options {options}"
    except Exception as e:  # every failure is counted, none stops the other sessions
        rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        try:  # where it stood: the page's heading and last lines
            text = " ".join((await page.locator("section.main, main").first.inner_text(timeout=5000)).split())
            rec["error"] += f" | page: {text[:120]} … {text[-200:]}"
        except Exception:  # noqa: BLE001 - the page may be gone
            pass
        if trace and up is not None:
            rec["error"] += f" | canvas value sent after the last stroke: {trace.canvas_sent_after(up)}"
    finally:
        await ctx.close()
        if trace:
            trace.save(TRACE_DIR / f"session-{i}.jsonl", rec)
    results.append(rec)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by the app server, the browsers, and the whole machine (from /proc).

    A process's own time plus that of its children already reaped (Chromium's renderers are
    reaped by its zygote, so closed tabs still count). ``machine``: busy time of all cores.
    """
    out = {"server": 0.0, "browsers": 0.0}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = sum(int(f) for f in fields[11:15]) / TICK  # utime, stime, cutime, cstime
        if "streamlit" in cmd and "streamlit_app.py" in cmd:
            out["server"] += seconds
        elif "chromium" in cmd.split(" ")[0]:
            out["browsers"] += seconds
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    out["machine"] = (sum(int(v) for v in cpu) - int(cpu[3]) - int(cpu[4])) / TICK  # minus idle, iowait
    return out


async def run(url, n, timeout, compare_timeout=None):
    from playwright.async_api import async_playwright

    results = []
    async with async_playwright() as p:
        before = cpu_by_role()
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        started = time.perf_counter()
        await asyncio.gather(*(session(i, browser, url, timeout, results, compare_timeout) for i in range(n)))
        wall = time.perf_counter() - started
        after = cpu_by_role()
        await browser.close()
    used = {k: after[k] - before[k] for k in after}
    return sorted(results, key=lambda r: r["session"]), wall, used


def warm_app_cache(prefix: str) -> str:
    """A fresh cache folder for the server (XWP_CACHE_DIR) with the real default model trained in it.

    Checks for Chromium first; the sessions then measure the warm app, not the first training.
    """
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    cache = tempfile.mkdtemp(prefix=prefix)
    os.environ["XWP_CACHE_DIR"] = cache
    os.environ.pop("XWP_DEFAULT_EPOCHS", None)  # the server trains and serves the real default model
    from xwp.app.shared import DefaultTrainer, default_model_path

    t0 = time.perf_counter()
    DefaultTrainer(default_model_path()).done.wait()
    print(f"default model ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return cache


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--timeout", type=float, default=240, help="seconds allowed for each step")
    p.add_argument(
        "--compare-timeout",
        type=float,
        default=None,
        help="seconds allowed for the comparison (default --timeout); the comparisons of all sessions "
        "queue one after another on the compute worker, so the last waits for the others",
    )
    p.add_argument(
        "--poll-ms",
        type=int,
        default=50,
        help="how often a waiting page re-checks its condition; 0: every animation frame (Playwright's "
        "default, which costs the browsers CPU the app then lacks)",
    )
    p.add_argument("--out", default="docs/results/load_test.md")
    p.add_argument("--server-log", default=None, help="write the server's output here")
    p.add_argument("--trace", default=None, help="write each page's websocket timeline to this folder")
    args = p.parse_args()
    global POLL_MS, TRACE_DIR
    POLL_MS = args.poll_ms or "raf"
    if args.trace:
        TRACE_DIR = Path(args.trace)
        TRACE_DIR.mkdir(parents=True, exist_ok=True)
    cache = warm_app_cache("xwp-load-")
    load_before = os.getloadavg()[0]
    with streamlit_server(cache, args.server_log) as url:
        results, wall, used = asyncio.run(run(url, args.sessions, args.timeout, args.compare_timeout))
    load_after = os.getloadavg()[0]
    errors = [r for r in results if r["error"]]
    others = max(used["machine"] - used["server"] - used["browsers"], 0.0)
    settings = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("XWP_COMPUTE"))
    settings = settings or "defaults"
    lines = [
        f"# Load test: {args.sessions} concurrent browser sessions",
        "",
        f"`python -m bench.load_test --sessions {args.sessions}`"
        + (f" `--compare-timeout {args.compare_timeout:g}`" if args.compare_timeout else "")
        + (f" `--poll-ms {args.poll_ms}`" if args.poll_ms != 50 else "")
        + f" on {os.cpu_count()} CPU cores, "
        f"one `streamlit run` server (compute executor: {settings}), Debian Chromium (Playwright). "
        f"Wall time {wall:.0f} s; errors: {len(errors)} of {len(results)} sessions. "
        f"Load average (1 min) {load_before:.1f} before, {load_after:.1f} after.",
        "",
        f"CPU time during the sessions ({wall:.0f} s x {os.cpu_count()} cores = {wall * os.cpu_count():.0f} "
        f"core-seconds): browsers {used['browsers']:.0f} s ({used['browsers'] / max(used['machine'], 1e-9):.0%}), "
        f"app server {used['server']:.0f} s ({used['server'] / max(used['machine'], 1e-9):.0%}), "
        f"everything else (Playwright's driver, other users of the machine) {others:.0f} s.",
        "",
        "| step | p50 (s) | p95 (s) | max (s) |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("open_s", "open the app (default model cached)"),
        ("draw_first_s", "(drawing the first stroke: Playwright's mouse moves)"),
        ("explain_first_s", "Explain: end of the first stroke to heatmaps"),
        ("draw_update_s", "(drawing the next stroke)"),
        ("explain_update_s", "Explain: end of the next stroke to updated heatmaps"),
        ("compare_s", "Compare: the 8 default methods x 8 images"),
    ):
        vals = [r[key] for r in results if key in r]
        top = max(vals, default=float("nan"))
        lines.append(f"| {label} | {pct(vals, 0.5):.2f} | {pct(vals, 0.95):.2f} | {top:.2f} |")
    if errors:
        lines += ["", "Errors:", ""] + [f"- session {r['session']}: {r['error']}" for r in errors]
    write_report(lines, args.out)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

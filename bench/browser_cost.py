"""What one stroke and one waiting comparison cost the browser and the server, in CPU seconds.

    python -m bench.browser_cost [--strokes 8] [--queued 3] [--out docs/results/browser_cost.md]

The load test (bench/load_test.py) gives latencies under 20 browsers; this script says where
the CPU goes, one thing at a time, on a quiet machine. It starts ``streamlit run`` on loopback
(default model trained first) and Debian's Chromium (Playwright, never ``playwright install``):

1. **stroke**: one tab on Explain draws ``--strokes`` strokes; for each, the CPU time the
   browsers, the app server and the whole machine used from the mouse-down until 2 s later
   (the update has arrived long before: ~0.4 s), without polling the page (polling would add
   its own cost); the median over strokes;
2. **poll**: the browser's CPU per second while a Playwright wait re-checks an idle page every
   animation frame (Playwright's default) against every 100 ms;
3. **queued**: ``--queued`` + 1 tabs on Compare, one running a long comparison, the others
   waiting behind it in the compute queue: browser and server CPU per second over 15 s.

CPU time from /proc (bench/load_test.py's ``cpu_by_role``): a renderer's time counts once its
tab is gone too. Numbers depend on the machine: compare variants measured on one machine, one
after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from pathlib import Path

from bench.load_test import (
    CHROMIUM,
    CHROMIUM_ARGS,
    cpu_by_role,
    goto,
    idle,
    open_app,
    prepare_comparison,
    streamlit_server,
    stroke,
    warm_app_cache,
)
from bench.speed import write_report

ROOT = Path(__file__).resolve().parents[1]

KEYS = ("browsers", "server", "machine")


async def new_tab(browser, url):
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    page.set_default_timeout(240_000)
    await open_app(page, url, 240)
    return page


async def stroke_cost(browser, url, n):
    """Median CPU seconds per stroke by role, from mouse-down to 2 s later."""
    page = await new_tab(browser, url)
    await goto(page, "Explain", 240)
    await stroke(page, [(70, 60), (210, 60), (150, 170), (120, 240)])  # the first stroke warms up
    await page.get_by_text("Time per method", exact=False).first.wait_for()
    await idle(page, 240)
    await asyncio.sleep(1)
    costs = []
    for k in range(n):
        before = cpu_by_role()
        y = 40 + 200 * k / max(n - 1, 1)
        await stroke(page, [(60, y), (220, y + 5)])
        await asyncio.sleep(2.0)
        after = cpu_by_role()
        costs.append({r: after[r] - before[r] for r in KEYS})
    await page.context.close()
    return {r: statistics.median(c[r] for c in costs) for r in KEYS}


async def poll_cost(browser, url, seconds=5.0):
    """The browser's CPU per second while a wait re-checks an idle page, by polling interval."""
    page = await new_tab(browser, url)
    never = "() => document.title === 'never this title'"
    out = {}
    for polling in ("raf", 100):
        before = cpu_by_role()
        with contextlib.suppress(Exception):  # the timeout is the point
            await page.wait_for_function(never, polling=polling, timeout=seconds * 1000)
        out[polling] = (cpu_by_role()["browsers"] - before["browsers"]) / seconds
    await page.context.close()
    return out


async def compare(page, n):
    await prepare_comparison(page, n, 240)
    await page.get_by_role("button", name="Run comparison").click()


async def queued_cost(browser, url, queued, seconds=15.0):
    """CPU per second by role while one comparison runs and ``queued`` others wait behind it."""
    pages = [await new_tab(browser, url) for _ in range(queued + 1)]
    await compare(pages[0], 1000)
    await asyncio.sleep(3)
    for page in pages[1:]:
        await compare(page, 8)
    await asyncio.sleep(5)
    waiting = sum([await p.get_by_text("waiting for the compute queue").count() > 0 for p in pages[1:]])
    before = cpu_by_role()
    await asyncio.sleep(seconds)
    after = cpu_by_role()
    for page in pages:
        await page.context.close()
    return {r: (after[r] - before[r]) / seconds for r in KEYS}, waiting


async def run(url, strokes, queued):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        per_stroke = await stroke_cost(browser, url, strokes)
        polls = await poll_cost(browser, url)
        waiting, n_waiting = await queued_cost(browser, url, queued)
        await browser.close()
    return per_stroke, polls, waiting, n_waiting


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strokes", type=int, default=8)
    p.add_argument("--queued", type=int, default=3)
    p.add_argument("--out", default="docs/results/browser_cost.md")
    args = p.parse_args()
    cache = warm_app_cache("xwp-cost-")
    started = time.perf_counter()
    with streamlit_server(cache) as url:
        per_stroke, polls, waiting, n_waiting = asyncio.run(run(url, args.strokes, args.queued))
    lines = [
        "# What a stroke and a waiting comparison cost (CPU seconds)",
        "",
        f"`python -m bench.browser_cost --strokes {args.strokes} --queued {args.queued}` on {os.cpu_count()} "
        f"CPU cores, one `streamlit run` server, Debian Chromium (Playwright); "
        f"{time.perf_counter() - started:.0f} s. Load average (1 min) after: {os.getloadavg()[0]:.1f}.",
        "",
        "| what | browsers | app server | whole machine |",
        "|---|---|---|---|",
        f"| one stroke on Explain (median of {args.strokes}, CPU-s) | {per_stroke['browsers']:.3f} | "
        f"{per_stroke['server']:.3f} | {per_stroke['machine']:.3f} |",
        f"| 1 comparison running + {args.queued} queued ({n_waiting} said waiting), CPU-s per s | "
        f"{waiting['browsers']:.3f} | {waiting['server']:.3f} | {waiting['machine']:.3f} |",
        "",
        f"A wait polling an idle tab: every animation frame {polls['raf']:.3f} CPU-s per s of the browser, "
        f"every 100 ms {polls[100]:.3f}.",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()

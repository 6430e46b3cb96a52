"""A/B in one process: stroke latency while a comparison runs, with and without the interactive lane.

    python -m bench.lane_ab [--seconds 12] [--rounds 2] [--out docs/results/lane_ab.md]

A comparison (``xwp.evaluate`` of Shapley, RISE, Occlusion and Integrated Gradients on 8
typeface images with max-sensitivity, as the Compare page runs it: a task that ticks between
batches) keeps the executor's worker busy, restarted whenever it ends. Meanwhile one session
asks for XWP + XWPᶜ of one image 4 times a second, as strokes on Explain do. Without the lane
a stroke waits for the running chunk of the comparison (the worker takes waiting requests
only at a tick); with it, the lane thread answers at once. Rounds alternate (off, on, off,
on, ...) in one process; the executor has the app's defaults otherwise (one worker, cores - 1
torch threads).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time

import numpy as np
import torch

import xwp
from bench.queue_bench import cpu_name, trained_like_model
from bench.speed import write_report
from xwp.attribution import XWP, XWPc
from xwp.evaluation.protocol import evaluate
from xwp.serve.compute import BACKGROUND, ComputeExecutor, JobCancelled

METHODS = ["shapley", "rise", "occlusion", "ig"]


def comparison(model, data):
    def task(ctx):
        for name in METHODS:
            evaluate(model, data, [name], n=8, seed=0, progress=lambda f, m: ctx.tick((f, m)), sensitivity_samples=3)

    return task


def one_round(lane, model, data, images, seconds, rate=4.0):
    threads = max(1, (os.cpu_count() or 1) - 1)
    ex = ComputeExecutor(workers=1, threads=threads, lane=lane)
    stop = threading.Event()

    def keep_busy():
        while not stop.is_set():
            job = ex.submit_task(comparison(model, data), priority=BACKGROUND)
            while not job.done() and not stop.is_set():
                time.sleep(0.05)
            if not job.done():
                job.cancel()
            with contextlib.suppress(JobCancelled):
                job.result(60)

    busy = threading.Thread(target=keep_busy)
    busy.start()
    time.sleep(1.0)  # the comparison is under way
    methods = [XWP(model), XWPc(model)]
    latencies, period, i = [], 1.0 / rate, 0
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while time.perf_counter() < end:
        time.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += period
        x, y = images[i % len(images)]
        t0 = time.perf_counter()
        for f in [ex.attribute(m, x, y) for m in methods]:
            f.result()
        latencies.append(time.perf_counter() - t0)
        i += 1
    stop.set()
    busy.join()
    ex.shutdown()
    return latencies


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="docs/results/lane_ab.md")
    args = p.parse_args()
    model = trained_like_model()
    test = xwp.load_dataset("typeface", "test")
    images = [(test.images[i : i + 1].double(), int(test.labels[i])) for i in range(50)]
    results = {False: [], True: []}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        for lane in (False, True):
            lat = one_round(lane, model, test, images, args.seconds)
            results[lane] += lat
            print(
                f"round {r + 1} lane={lane}: {len(lat)} strokes, p50 {1e3 * np.percentile(lat, 50):.0f} ms, "
                f"p95 {1e3 * np.percentile(lat, 95):.0f} ms, max {1e3 * max(lat):.0f} ms",
                flush=True,
            )
    lines = [
        "# Strokes while a comparison runs: with and without the interactive lane",
        "",
        f"`python -m bench.lane_ab --seconds {args.seconds:g} --rounds {args.rounds}` on {cpu_name()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}; load average (1 min) {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. One stroke = XWP + XWPᶜ of one typeface image (float64), 4 a second, "
        f"while a comparison ({', '.join(METHODS)}, 8 images, max-sensitivity) keeps the worker busy; "
        "rounds alternate off/on in one process. "
        "A session waits for its maps before its next stroke, so a blocked stroke also delays the next ones.",
        "",
        "| lane | strokes | p50 (ms) | p95 (ms) | max (ms) |",
        "|---|---|---|---|---|",
    ]
    for lane in (False, True):
        lat = np.array(results[lane]) * 1e3
        lines.append(
            f"| {'on' if lane else 'off'} | {len(lat)} | {np.percentile(lat, 50):.0f} | "
            f"{np.percentile(lat, 95):.0f} | {lat.max():.0f} |"
        )
    write_report(lines, args.out)


if __name__ == "__main__":
    main()

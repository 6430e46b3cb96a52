"""Server-side benchmark of the compute queue, without browsers: k sessions asking for explanations.

    python -m bench.queue_bench [--sessions 1,4,16] [--seconds 6] [--rate 4] [--out docs/results/bench_queue.md]

Each of ``k`` threads plays one session of the Explain page: it asks for XWP and XWPᶜ of one
typeface test image (float64, the paper's 784-400-100-10 MLP, as the app computes them), waits
for both maps, and asks again, either back to back (``closed``: the worst case, every session
drawing without pause) or ``--rate`` times a second (``paced``: a stroke every 250 ms).

- **before**: every session thread calls torch itself, as the app does today (torch's default
  intra-op threads in every thread, so k sessions run k x threads threads on the cores);
- **after**: every session submits to one :class:`xwp.serve.compute.ComputeExecutor` (one worker that
  owns the cores) and waits on the Futures; requests that wait together run as one batch.

Reports per k and pattern: requests (XWP + XWPᶜ of one image) completed per second, latency
p50 / p95 from asking to having both maps, and for "after" the mean images per merged call.
Numbers depend on the machine and its load: both variants run in one process, one after the
other, so compare them with each other, not with other runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

import xwp
from bench.speed import markdown
from xwp.attribution import XWP, XWPc
from xwp.serve.compute import ComputeExecutor


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        return names[0] if names else platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def trained_like_model():
    """The paper's MLP with weights moved away from their initial state (XWP's cost does not need training)."""
    model = xwp.MLP((784, 400, 100, 10), seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return copy.deepcopy(model).double().eval()


def session_loop(ask, images, stop_at, rate, latencies, errors, offset, phase):
    """Ask for explanations until ``stop_at``; append each latency (s)."""
    period = 1.0 / rate if rate else 0.0
    next_at = time.perf_counter() + phase * period  # sessions spread over one period
    i = offset
    while True:
        if period:
            now = time.perf_counter()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += period
        t0 = time.perf_counter()
        if t0 >= stop_at:
            return
        x, y = images[i % len(images)]
        try:
            ask(x, y)
        except Exception as e:  # counted and reported
            errors.append(repr(e))
        latencies.append(time.perf_counter() - t0)
        i += 1


def run(k, variant, methods, images, seconds, rate, threads):
    """One measurement: k sessions for ``seconds``; returns a result row."""
    executor = None
    if variant == "before":
        torch.set_num_threads(threads)

        def ask(x, y):
            for m in methods:
                m.attribute(x, target=y)

    else:
        workers, n_threads = {"after": (1, threads), "after-1t": (1, 1), "after-2w": (threads, 1)}[variant]
        executor = ComputeExecutor(workers=workers, threads=n_threads, max_pending=4096)

        def ask(x, y):
            futures = [executor.attribute(m, x, y) for m in methods]
            for f in futures:
                f.result()

    latencies, errors = [], []
    stop_at = time.perf_counter() + seconds
    sessions = [
        threading.Thread(
            target=session_loop, args=(ask, images, stop_at, rate, latencies, errors, j * 37 % len(images), j / k)
        )
        for j in range(k)
    ]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in sessions:
        t.start()
    for t in sessions:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    row = {
        "sessions": k,
        "pattern": f"paced {rate}/s" if rate else "closed",
        "variant": variant,
        "requests/s": len(latencies) / elapsed,
        "p50 ms": 1e3 * float(np.percentile(latencies, 50)) if latencies else float("nan"),
        "p95 ms": 1e3 * float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "CPU ms/req": 1e3 * cpu / max(1, len(latencies)),
        "errors": len(errors),
        "images/call": float("nan"),
    }
    if executor is not None:
        s = executor.stats
        row["images/call"] = s["batched_requests"] / max(1, s["calls"])
        executor.shutdown()
    print(
        f"  k={k:2d} {row['pattern']:10s} {variant:6s} {row['requests/s']:7.1f} req/s  "
        f"p50 {row['p50 ms']:7.1f} ms  p95 {row['p95 ms']:7.1f} ms  CPU {row['CPU ms/req']:6.1f} ms/req  "
        f"errors {row['errors']}  "
        f"images/call {row['images/call']:.1f}",
        flush=True,
    )
    return row


def batch_gain(methods, images, n=16):
    """Time of ``n`` one-image calls against one call on the ``n`` images (XWP + XWPc), best of 5."""
    xs = torch.cat([x for x, _ in images[:n]])
    ys = torch.tensor([y for _, y in images[:n]])

    def best(fn):
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    single = best(lambda: [m.attribute(x, target=y) for x, y in images[:n] for m in methods])
    batched = best(lambda: [m.attribute(xs, target=ys) for m in methods])
    text = (
        f"{n} one-image calls {1e3 * single:.1f} ms, one call on {n} images {1e3 * batched:.1f} ms "
        f"(x{single / batched:.2f})."
    )
    print("  batching: " + text, flush=True)
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", default="1,4,16")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rate", type=float, default=4.0, help="strokes per second per session in the paced pattern")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (both variants)")
    p.add_argument("--out", default="docs/results/bench_queue.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = trained_like_model()
    methods = [XWP(model), XWPc(model)]
    test = xwp.load_dataset("typeface", "test")
    images = [(test.images[i : i + 1].double(), int(test.labels[i])) for i in range(200)]
    where = f"CPU {cpu_name()}, {os.cpu_count()} cores, torch {args.threads} threads; torch {torch.__version__}"
    load = os.getloadavg()
    print(f"{where}; load average before: {load[0]:.2f}", flush=True)
    for m in methods:  # warm-up
        m.attribute(images[0][0], target=images[0][1])
    batch_ab = batch_gain(methods, images)
    rows = []
    for rate in (0.0, args.rate):
        for k in [int(s) for s in args.sessions.split(",")]:
            for variant in ("before", "after", "after-1t", "after-2w"):
                rows.append(run(k, variant, methods, images, args.seconds, rate, args.threads))
    load_after = os.getloadavg()
    text = [
        f"# Compute queue: k concurrent sessions asking for XWP + XWPᶜ ({where})",
        "",
        f"Command: `python -m bench.queue_bench --sessions {args.sessions} --seconds {args.seconds:g} "
        f"--rate {args.rate:g}`; load average (1 min) {load[0]:.2f} before, {load_after[0]:.2f} after "
        "(other processes shared the cores).",
        "",
        "One request = XWP and XWPᶜ of one typeface image in float64 on the paper's 784-400-100-10 MLP, "
        "as the Explain page computes them per stroke. *before*: each session thread calls torch directly "
        "(today's app); *after*: through one `xwp.serve.compute.ComputeExecutor` (one worker owning the cores, "
        "batching requests that wait together). *closed*: every session asks again as soon as it has its "
        f"maps; *paced*: {args.rate:g} requests per second per session. Latency: from asking to having "
        "both maps. *after-1t*: the executor's worker with one torch thread; "
        "*after-2w*: one worker per core, one torch thread each. *CPU ms/req*: CPU time of "
        "the whole process per request (all threads, spinning included): what a request costs the "
        "machine, independent of the share of the cores other processes left us.",
        "",
        markdown(rows),
        "",
        "Batching on its own (same process, best of 5): " + batch_ab,
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

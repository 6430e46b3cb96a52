"""Same-process A/B on a CPU: does ``torch.compile`` of XWP's gather + rank-1 update + ReLU pay?

    python -m bench.compile_ab [--threads 1] [--rounds 7] [--out docs/results/compile_ab_cpu.md]

XWP's hot loop builds one perturbed first-layer pre-activation per non-zero feature,
``relu(h1[b] + x_bi * delta_i)``, and sends the rows through layers 2..L. Eager torch runs the
gather, the rank-1 update and the ReLU as separate passes over memory; ``torch.compile``
(Inductor, C++ on a CPU) can fuse them into one. Variants, on batches of 64 typeface-like
images (22 % non-zero) on the paper's 784-400-100-10 MLP in float32:

- ``sparse``: :class:`xwp.attribution.XWP` as shipped;
- ``sparse+compile``: :class:`xwp.experimental.fast_paths.CompiledXWP`, the same with the per-chunk row
  builder and layers 2..L compiled;
- ``dense``: :class:`xwp.experimental.fast_paths.DenseXWP` (every feature, sync-free; GPU-oriented);
- ``dense+compile``: the same, compiled.

Rounds interleave the variants so that a change of machine load hits them alike; the table
gives the median per variant and its ratio to ``sparse``. Results agree within float32
rounding (checked, printed as max |difference|).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from bench.bench_cuda import inputs, model_like_trained
from xwp.attribution import XWP
from xwp.experimental.fast_paths import CompiledXWP, DenseXWP


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", default="docs/results/compile_ab_cpu.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = model_like_trained(dtype)
    x = inputs(args.batch, seed=3).to(dtype)
    t = torch.arange(args.batch) % 10
    variants = {
        "sparse": XWP(model),
        "sparse+compile": CompiledXWP(model),
        "dense": DenseXWP(model),
        "dense+compile": DenseXWP(model, compile=True),
    }
    ref = variants["sparse"].attribute(x, target=t)
    diffs, times = {}, {k: [] for k in variants}
    for name, m in variants.items():
        t0 = time.perf_counter()
        out = m.attribute(x, target=t)  # warm-up (compiles)
        diffs[name] = float((out - ref).abs().max())
        print(f"  {name:15s} first call {time.perf_counter() - t0:7.2f} s, max |diff| {diffs[name]:.2e}", flush=True)
    for _ in range(args.rounds):
        for name, m in variants.items():
            t0 = time.perf_counter()
            m.attribute(x, target=t)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["sparse"])
    lines = [
        f"# torch.compile A/B for XWP on a CPU ({os.cpu_count()}-core {cpu()}, {args.threads} torch thread(s); "
        f"torch {torch.__version__})",
        "",
        f"Command: `python -m bench.compile_ab --threads {args.threads} --rounds {args.rounds} --dtype {args.dtype}`; "
        f"load average (1 min) {os.getloadavg()[0]:.2f} at the end (the cores were shared with other processes).",
        "",
        f"XWP on {args.batch} typeface-like images (22 % non-zero), 784-400-100-10 MLP, {args.dtype}; median of "
        f"{args.rounds} interleaved rounds.",
        "",
        "| variant | ms / batch (median) | min | ratio to sparse | max abs difference to sparse |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        med = statistics.median(times[name])
        lines.append(
            f"| {name} | {1e3 * med:.2f} | {1e3 * min(times[name]):.2f} | {med / base:.2f} | {diffs[name]:.1e} |"
        )
        print(f"  {name:15s} {1e3 * med:8.2f} ms (x{med / base:.2f} of sparse)", flush=True)
    out = Path(args.out)
    old = out.read_text() if out.exists() and args.append else ""
    out.write_text(old + ("\n" if old else "") + "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU"


if __name__ == "__main__":
    main()

"""Same-process A/B: deletion/insertion curves through the first layer's linearity, or masked copies.

    python -m bench.curves_ab [--data-dir ../shared/data] [--n 256] [--rounds 5] [--device cpu|cuda]
                              [--out docs/results/curves_ab_cpu.md]

:func:`xwp.evaluation.faithfulness.curves` runs the whole network on ``steps + 1`` masked copies of each
image (200 steps: 201 rows of 784 -> 400 -> 100 -> 10), unless the first layer is ``nn.Linear``
and the removal's fill value does not depend on the mask; then (``shortcut=True``, the
default) it sums the features' rank-1 contributions to the first pre-activation step by step
and runs only layers 2..L on the rows. For fast methods the curves are most of
:func:`xwp.evaluate`'s time, so this measures both:

- ``curves``: the three curves of one method's maps (MoRF and LeRF deletion, insertion) on
  ``--n`` test images, softmax, per removal (zero, mean, blur);
- ``evaluate``: :func:`xwp.evaluate` of XWP and Random on ``--n`` images, both output spaces,
  zero removal, with the shortcut on and off (off: ``faithfulness._linear_first`` replaced for the run).

Rounds alternate the variants so that a change of load hits both alike; the table gives
medians and the ratio. The curves must agree (max |difference| printed, float32 model) and the
two evaluations must give the same summary table to 1e-6.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import xwp
from bench.speed import paper_model, write_report
from xwp.attribution import XWP
from xwp.evaluation import faithfulness as F
from xwp.evaluation.removal import Blur, TrainMean, Zero


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def three_curves(model, x, t, a, removal, shortcut):
    return [
        F.curves(model, x, t, a, kind, order, removal=removal, shortcut=shortcut)
        for kind, order in (("deletion", "morf"), ("deletion", "lerf"), ("insertion", "morf"))
    ]


LINEAR_FIRST = F._linear_first


def set_default_shortcut(on: bool) -> None:
    """Whether :func:`xwp.evaluate`'s curves take the shortcut (off: no network counts as linear-first)."""
    F._linear_first = LINEAR_FIRST if on else (lambda model: None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="adds Fashion-MNIST (torchvision layout)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="docs/results/curves_ab_cpu.md")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    datasets = ["typeface"] + (["fashion-mnist"] if args.data_dir else [])
    for name in datasets:
        model, test = paper_model(name, args.data_dir if name != "typeface" else None, device)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(test.images), generator=g)[: args.n]
        x = test.images[idx].to(device)
        t = model(x.reshape(len(x), -1)).argmax(1)
        a = XWP(model).attribute(x, t)
        mean = test.images.reshape(len(test.images), -1).mean(0).to(device)
        removals = {"zero": Zero(), "mean": TrainMean(mean), "blur": Blur(2.0)}
        for rname, removal in removals.items():
            times, outs = {True: [], False: []}, {}
            for r in range(args.rounds):
                for on in (r % 2 == 0, r % 2 == 1):
                    outs[on], s = timed(three_curves, model, x, t, a, removal, on)
                    times[on].append(s)
            err = max((u - v).abs().max().item() for u, v in zip(outs[True], outs[False], strict=True))
            on_s, off_s = statistics.median(times[True]), statistics.median(times[False])
            rows.append((name, f"curves, {rname} removal", args.n, off_s, on_s, off_s / on_s, f"{err:.1e}"))
            print(rows[-1], flush=True)
        times = {True: [], False: []}
        tables = {}
        for r in range(max(2, args.rounds // 2)):
            for on in (r % 2 == 0, r % 2 == 1):
                set_default_shortcut(on)
                ev, s = timed(xwp.evaluate, model, test, ["xwp", "random"], n=args.n, seed=0)
                times[on].append(s)
                summary = ev.summary().select_dtypes("number")
                tables[on] = summary[[c for c in summary.columns if "second" not in c]]  # not the timings
        set_default_shortcut(True)
        gaps = (tables[True] - tables[False]).abs().max()
        diff = gaps.max()
        print("largest differences:", gaps.sort_values().tail(3).to_dict(), flush=True)
        assert diff < 1e-6, f"evaluate's summary differs by {diff}"
        on_s, off_s = statistics.median(times[True]), statistics.median(times[False])
        rows.append((name, "evaluate(XWP, Random), 2 outputs", args.n, off_s, on_s, off_s / on_s, f"{diff:.1e}"))
        print(rows[-1], flush=True)
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# Curves through the first layer's linearity: A/B ({args.device}; {cpu}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads)",
        "",
        f"Command: `python -m bench.curves_ab{' --data-dir ' + args.data_dir if args.data_dir else ''} "
        f"--n {args.n} --rounds {args.rounds}`. The paper's 784-400-100-10 MLP (float32), 200 steps; "
        "*masked*: the whole network on every masked copy (`shortcut=False`); *shortcut*: running sums of "
        "the first layer's rank-1 contributions, layers 2..L on the rows (the default). Medians of "
        "alternating rounds in one process.",
        "",
        "| dataset | work | images | masked (s) | shortcut (s) | x faster | max abs difference |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {d} | {w} | {n} | {a:.3f} | {b:.3f} | {r:.2f} | {e} |" for d, w, n, a, b, r, e in rows]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()

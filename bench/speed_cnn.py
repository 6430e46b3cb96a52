"""Speed of XWP / XWPc on a CNN against Captum Occlusion 1x1, batch of 64, in the same process.

    python -m bench.speed_cnn --checkpoint cnn.safetensors [--data-dir ../shared/data]
        [--threads 1] [--repeat 3] [--out docs/results/bench_cnn.md]

Without ``--checkpoint`` a default ``xwp.CNN`` is trained for one epoch on Fashion-MNIST
first (the timings barely depend on the weights; they depend on the images' zero pixels).

Occlusion 1x1 with a zero baseline reruns the whole network once per pixel (784 rows per
image, ``perturbations_per_eval=64``); XWP and XWPc rerun only layers 2..L, once per
*non-zero* pixel, after adding a k x k patch to the first feature map. The report prints
both counts and the measured cost of the first layer against the rest, so the speed-up
can be checked against its explanation.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

import xwp
from xwp.attribution import XWP, XWPc, make_method
from xwp.models import CNN


def best_time(fn, repeat: int, warm=None) -> float:
    """Best of ``repeat`` runs after one warm-up (``warm``, a cheaper call, or ``fn`` itself), in seconds."""
    (warm or fn)()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cpu_name() -> str:
    """The CPU model from lscpu (or platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    """Run the comparison and write the Markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="docs/results/bench_cnn.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    test = xwp.load_dataset("fashion-mnist", "test", data_dir=args.data_dir)
    if args.checkpoint:
        ck = xwp.load_checkpoint(args.checkpoint)
        model, source = ck.model, f"{args.checkpoint} (test accuracy {ck.meta.get('test_accuracy', float('nan')):.4f})"
    else:
        train = xwp.load_dataset("fashion-mnist", "train", data_dir=args.data_dir)
        model = CNN(seed=0)
        h = xwp.train(model, train.subset(range(10_000)), test, epochs=1, device="cpu")
        source = f"default CNN trained 1 epoch on 10k images (test accuracy {h.test_accuracy[-1]:.4f})"
    model = model.cpu().eval()
    x = test.sample(args.batch, 0).images if hasattr(test, "sample") else test.images[: args.batch]
    if not isinstance(x, torch.Tensor):
        x = x.images
    t = model(x).argmax(1)
    nnz = int((x != 0).sum())
    d = x[0].numel()

    rows = []
    xwp_m, xwpc_m = XWP(model), XWPc(model)
    occ32 = make_method("occlusion", model, perturbations_per_eval=64, dtype=None)
    occ64 = make_method("occlusion", model, perturbations_per_eval=64)  # the registry default: float64
    runs = [
        ("XWP", xwp_m),
        ("XWPᶜ", xwpc_m),
        ("Occlusion 1x1, float32", occ32),
        ("Occlusion 1x1, float64 (registry default)", occ64),
    ]
    times = {name: float("inf") for name, _ in runs}
    for _name, method in runs:  # warm-up on 4 images
        method.attribute(x[:4], target=t[:4])
    for _ in range(args.repeat):  # round robin, so that changes in the machine's load hit every method
        for name, method in runs:
            t0 = time.perf_counter()
            method.attribute(x, target=t)
            times[name] = min(times[name], time.perf_counter() - t0)
    for name, _ in runs:
        rows.append(name)
        print(f"{name}: {times[name]:.3f} s for {args.batch} images", flush=True)

    # what one row costs: the whole network against layers 2..L, on 4096 rows in batches of 64
    probe = x.repeat(4096 // args.batch, 1, 1, 1)
    with torch.no_grad():
        h1 = model.net[0](probe)
        full = best_time(lambda: [model(p) for p in probe.split(64)], args.repeat)
        rest = best_time(lambda: [model.after_first(h) for h in h1.split(64)], args.repeat)
    print(f"per 4096 rows: whole network {full:.3f} s, layers 2..L {rest:.3f} s", flush=True)

    ref = times["Occlusion 1x1, float32"]
    lines = [
        "# XWP / XWPᶜ on a CNN against Captum Occlusion 1x1",
        "",
        f"Machine: {cpu_name()}, {args.threads} torch thread(s) (the machine has 2 cores shared with other "
        f"work), torch {torch.__version__}. Written by `bench/speed_cnn.py`; one run, best of {args.repeat} "
        "round-robin repeat(s) after a warm-up on 4 images, all in the same process. 1-minute load average "
        f"{load0:.1f} before and {os.getloadavg()[0]:.1f} after the timings: above 2 means other jobs shared "
        "the cores, so absolute times are inflated and noisy and the ratios are the result.",
        "",
        f"Model: `{model.describe()}` ({model.n_parameters():,} parameters), {source}.",
        f"Inputs: {args.batch} Fashion-MNIST test images (seed 0), {nnz} of {args.batch * d} pixels non-zero "
        f"({nnz / (args.batch * d):.1%}); targets: the predicted classes.",
        "",
        "| method | s per batch of 64 | ms per image | vs Occlusion float32 |",
        "|---|---|---|---|",
    ]
    for name in rows:
        lines.append(
            f"| {name} | {times[name]:.3f} | {1000 * times[name] / args.batch:.1f} | {ref / times[name]:.2f}x |"
        )
    ratio = full / rest
    occ_est, xwp_est = args.batch * d * full / 4096, nnz * rest / 4096
    lines += [
        "",
        "Why XWP is faster here:",
        "",
        f"- Rows through the network: Occlusion runs the whole CNN once per pixel, {args.batch * d} rows "
        f"(+{args.batch} references); XWP runs layers 2..L once per *non-zero* pixel, {nnz} rows "
        f"({args.batch * d / nnz:.2f}x fewer). A zero pixel has no first-layer contribution, so its "
        "score is exactly 0 without computing anything.",
        f"- Cost per row: XWP skips the first convolution (the k x k patch it changes is added with an "
        f"index scatter). Measured on 4096 rows in batches of 64: whole network {full:.3f} s, layers 2..L {rest:.3f} s "
        f"({ratio:.2f}x). On this CNN layers 2..L cost most of a row (a profile shows the max pooling of "
        "the 16x28x28 map, then the second convolution, on top), so skipping the first convolution saves "
        "little; the zero pixels matter more.",
        f"- Expected ratio from these two factors: {args.batch * d / nnz * ratio:.2f}x; measured: "
        f"{ref / times['XWP']:.2f}x (XWP) and {ref / times['XWPᶜ']:.2f}x (XWPᶜ: the same work plus one "
        "all-initial reference pass per image; XWP and XWPᶜ differ by run-to-run noise).",
        f"- The remainder is overhead: at the probe's rates Occlusion's {args.batch * d} forwards take "
        f"{occ_est:.1f} s but the call took {ref:.1f} s ({ref / occ_est:.1f}x: Captum builds and "
        f"bookkeeps every perturbed copy); XWP's {nnz} rows take {xwp_est:.1f} s through layers 2..L and "
        f"the call took {times['XWP']:.1f} s ({times['XWP'] / xwp_est:.1f}x: gathering h1, the patch "
        "scatter and the scores).",
        "- Not used yet: the change after the first layer stays local through ReLU and pooling, so "
        "layers 2..k could be recomputed only on the affected window (incremental evaluation); "
        "that would make the cost per row much smaller than a full pass.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

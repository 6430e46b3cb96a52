"""GPU latency and throughput of XWP / XWPᶜ against the fp32 GEMM rate measured in the same run.

    python -m bench.bench_cuda [--device cuda] [--out docs/results/bench_cuda_paths.md] [--quick]

On the paper's 784-400-100-10 MLP (weights moved off their initial state; cost does not depend
on training) and typeface-like inputs (random, 22 % non-zero, the typeface test set's density):

1. **one image, XWP + XWPᶜ**: the sparse path (``xwp.attribution``; ``nonzero`` syncs), the dense
   sync-free path (:class:`xwp.experimental.fast_paths.DenseXWP`), the dense path captured as a CUDA graph
   (:class:`~xwp.experimental.fast_paths.CapturedXWP`) and ``torch.compile(mode="reduce-overhead")``;
2. **batches of 64 and 256**: the sparse path (one sync per call), the same with its row work
   compiled (:class:`~xwp.experimental.fast_paths.CompiledXWP`) and the dense path; ms per batch, images/s
   and the useful rate: XWP needs
   ``2 (400*100 + 100*10)`` flops per non-zero feature (layers 2..L), against the fp32 GEMM rate
   of the same shape (rows = non-zero features of the batch, 400 -> 100) and of a square 8192
   GEMM, both measured here;
3. **precision**: fp32, TF32 matmuls and bf16 weights, each with its error against float64
   (max |error| / max |attribution|) beside its speed.

Timing: median of repeated calls after warm-up, with ``torch.cuda.synchronize`` around each.
``--device cpu`` runs the same code on a CPU (a dry run for this script; no CUDA graphs).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

import torch

import xwp
from bench.speed import markdown
from xwp.attribution import XWP, XWPc
from xwp.experimental.fast_paths import CapturedXWP, CompiledXWP, CompiledXWPc, DenseXWP

WIDTHS = (784, 400, 100, 10)
FLOPS_PER_ROW = 2 * (400 * 100 + 100 * 10)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device, repeat=50, warmup=5, budget=3.0):
    """Median seconds of ``fn`` (synchronised), after ``warmup`` calls, within ``budget`` seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times, start = [], time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget and len(times) >= 3:
            break
    return statistics.median(times)


def model_like_trained(dtype=torch.float32):
    model = xwp.MLP(WIDTHS, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model.to(dtype).eval()


def inputs(n, density=0.22, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=gen)
    x[torch.rand(n, 784, generator=gen) > density] = 0
    return x


def gemm_rate(m, k, n, device, dtype=torch.float32):
    """GFLOP/s of ``addmm`` (m x k) @ (k x n)."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    c = torch.randn(n, device=device, dtype=dtype)
    t = median_time(lambda: torch.addmm(c, a, b), device, repeat=30)
    return 2 * m * k * n / t / 1e9


@contextlib.contextmanager
def tf32(enabled):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def pair(model, kind, batch=1, compile_mode=None):
    """``attribute(x, t)`` of XWP followed by XWPᶜ on ``model`` for one path ``kind``."""
    if kind == "sparse":
        a, b = XWP(model), XWPc(model)
    elif kind == "sparse+compile":
        a, b = CompiledXWP(model), CompiledXWPc(model)
    elif kind == "dense":
        mode = compile_mode or False
        a, b = DenseXWP(model, compile=mode), DenseXWP(model, complementary=True, compile=mode)
    elif kind == "graph":
        a, b = CapturedXWP(DenseXWP(model), batch), CapturedXWP(DenseXWP(model, complementary=True), batch)
    else:
        raise ValueError(kind)
    return lambda x, t: (a.attribute(x, target=t), b.attribute(x, target=t))


def latency(model, device, rows):
    x = inputs(1).to(device)
    t = torch.tensor([3], device=device)
    kinds = [("sparse", None), ("dense", None)]
    if device.type == "cuda":
        kinds += [("graph", None), ("dense", "reduce-overhead")]
    for kind, mode in kinds:
        label = f"{kind}" + (f" + compile({mode})" if mode else "")
        try:
            fn = pair(model, kind, 1, mode)
            ms = 1e3 * median_time(lambda fn=fn: fn(x, t), device, repeat=200)
        except Exception as e:  # reported, not fatal: e.g. no compiler toolchain
            print(f"  one image {label:32s} failed: {type(e).__name__}: {e}", flush=True)
            rows.append({"work": "1 image, XWP + XWPᶜ", "path": label, "ms": float("nan"), "note": type(e).__name__})
            continue
        rows.append({"work": "1 image, XWP + XWPᶜ", "path": label, "ms": ms, "note": ""})
        print(f"  one image {label:32s} {ms:8.3f} ms", flush=True)


def throughput(model, device, batches, rows):
    big = gemm_rate(8192, 8192, 8192, device) if device.type == "cuda" else gemm_rate(2048, 2048, 2048, device)
    for n in batches:
        x = inputs(n, seed=n).to(device)
        t = (torch.arange(n) % 10).to(device)
        nnz = int((x != 0).sum())
        shaped = gemm_rate(nnz, 400, 100, device)
        useful = 2 * nnz * FLOPS_PER_ROW  # XWP and XWPc
        kinds = ("sparse", "sparse+compile", "dense") + (("graph",) if device.type == "cuda" else ())
        for kind in kinds:
            try:
                fn = pair(model, kind, n)
                s = median_time(lambda fn=fn, x=x, t=t: fn(x, t), device, repeat=30)
            except Exception as e:  # reported, not fatal: e.g. no compiler toolchain
                print(f"  batch {n:4d} {kind}: failed: {type(e).__name__}: {e}", flush=True)
                continue
            rate = useful / s / 1e9
            rows.append(
                {
                    "batch": n,
                    "path": kind,
                    "ms (XWP + XWPᶜ)": 1e3 * s,
                    "images/s": n / s,
                    "useful GFLOP/s": rate,
                    "GEMM same shape GFLOP/s": shaped,
                    "% of same-shape GEMM": 100 * rate / shaped,
                    "% of square GEMM": 100 * rate / big,
                }
            )
            print(
                f"  batch {n:4d} {kind:14s} {1e3 * s:8.3f} ms  {n / s:9.0f} img/s  {rate:8.0f} GFLOP/s = "
                f"{100 * rate / shaped:5.1f}% of {shaped:.0f} (same shape), "
                f"{100 * rate / big:5.1f}% of {big:.0f} (square)",
                flush=True,
            )


def precision(model, device, n, rows):
    x = inputs(n, seed=7)
    t = torch.arange(n) % 10
    m64 = _copy(model, torch.float64, torch.device("cpu"))
    ref = torch.stack([XWP(m64).attribute(x.double(), t), XWPc(m64).attribute(x.double(), t)])
    scale = float(ref.abs().max())
    options = [("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)]
    for label, dtype, allow in options:
        if allow and device.type != "cuda":
            continue
        m = _copy(model, dtype, device)
        xs = x.to(device, dtype)
        td = t.to(device)
        for kind in ("sparse", "dense"):
            fn = pair(m, kind)
            with tf32(allow):
                s = median_time(lambda fn=fn, xs=xs, td=td: fn(xs, td), device, repeat=30)
                got = torch.stack([a.double().cpu() for a in fn(xs, td)])
            err = float((got - ref).abs().max()) / scale
            rows.append({"precision": label, "path": kind, "batch": n, "ms": 1e3 * s, "max error / max |attr|": err})
            print(f"  {label:5s} {kind:6s} batch {n}: {1e3 * s:8.3f} ms, max error {err:.2e} of max |attr|", flush=True)


def _copy(model, dtype, device):
    import copy

    return copy.deepcopy(model).to(device=device, dtype=dtype)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="batches 8 and 16 (a dry run)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU {platform.machine()}"
    print(f"device: {where}; torch {torch.__version__}", flush=True)
    model = model_like_trained().to(device)
    lat, thr, prec = [], [], []
    print("[one image]", flush=True)
    latency(model, device, lat)
    batches = (8, 16) if args.quick else (64, 256)
    print("[throughput]", flush=True)
    throughput(model, device, batches, thr)
    print("[precision]", flush=True)
    precision(model, device, batches[-1], prec)
    out = Path(args.out or f"docs/results/bench_{'cuda' if device.type == 'cuda' else 'cpu'}_paths.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "\n".join(
            [
                f"# XWP fast paths ({where}; torch {torch.__version__})",
                "",
                f"Command: `python -m bench.bench_cuda --device {args.device}"
                + (" --quick" if args.quick else "")
                + "`",
                "",
                "## One image, XWP + XWPᶜ",
                "",
                markdown(lat),
                "",
                "## Throughput (useful flops: 2 (400*100 + 100*10) per non-zero feature, XWP and XWPᶜ)",
                "",
                markdown(thr),
                "",
                "## Precision: max |error| against the sparse path in float64 on the CPU",
                "",
                markdown(prec),
                "",
            ]
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Speed benchmark: every method on the paper's MLP, and how fast XWP / XWPc really are.

    python -m bench.speed [--data-dir ../shared/data] [--device cpu|cuda] [--out docs/results]

Prints (and writes as Markdown to ``<out>/bench_<device>.md``):

1. per method and dataset: ms per image at batch 1 and batch 256, images per second and
   peak memory above the baseline (CPU: resident set size sampled every millisecond, in a
   last pass with glibc's mmap threshold fixed at 128 KiB so that freed tensors leave the
   RSS at once (that setting slows allocation, so no timing is taken under it);
   CUDA: ``torch.cuda.max_memory_allocated``);
2. XWP and XWPc on a batch of 64 images against (a) a naive implementation that really
   swaps each feature's weights and runs the model, and (b) Captum Occlusion with 1x1
   windows, both measured in the same run; and the fraction of the roofline reached:
   XWP needs 2 (400*100 + 100*10) flops per non-zero input feature per image through
   layers 2..L, compared with the matmul GFLOP/s of the same shape measured here;
3. one image, XWP + XWPc together;
4. scaling: time per image against hidden width (100..2000) for inputs of 784 and
   3072 features, plotted to ``<out>/bench_scaling_<device>.png``.

Speed targets live here, not in unit tests: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from pathlib import Path

import torch

import xwp
from xwp.attribution import METHODS, XWP, XWPc, make_method
from xwp.attribution.reference import xwp_reference, xwpc_reference
from xwp.config import cache_dir
from xwp.viz import plots


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, repeat=5, min_time=0.0):
    """Best of ``repeat`` runs after one warm-up, in seconds; a warm-up over 2 s is the result."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    if time.perf_counter() - t0 > 2.0:
        return time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if min_time and sum(times) > min_time:
            break
    return min(times)


def _fixed_mmap_threshold():
    """Make glibc hand big blocks straight back to the OS, so resident memory tracks live tensors."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: blocks >= 128 KiB are mmapped and unmapped on free
        return libc
    except OSError:
        return None


LIBC = None  # set by run_memory_jobs(): a fixed mmap threshold slows allocation, so timings come first
MEMORY_JOBS = []


def measure_later(row, fn, device):
    """Queue ``fn`` for a peak-memory measurement once every timing is done (see LIBC)."""
    row["peak MB"] = float("nan")
    MEMORY_JOBS.append((row, fn, device))


def run_memory_jobs():
    """Measure the queued peaks, after switching glibc to a fixed mmap threshold."""
    global LIBC
    LIBC = _fixed_mmap_threshold()
    for row, fn, device in MEMORY_JOBS:
        row["peak MB"] = peak_memory(fn, device) / 2**20
        print(
            f"  {row.get('dataset', row.get('inputs', ''))!s:14s} {row.get('method', row.get('work', ''))!s:40s} "
            f"{row.get('width', '')!s:5s} peak {row['peak MB']:8.1f} MB",
            flush=True,
        )


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn, device):
    """Peak memory above the level before ``fn`` (bytes).

    CPU: resident set size sampled every millisecond (blocks of 128 KiB or more are mmapped,
    so freed tensors leave the RSS at once); short peaks between samples can be missed.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if LIBC is not None:
        LIBC.malloc_trim(0)
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    fn()
    done.set()
    t.join()
    peak[0] = max(peak[0], rss_bytes())
    return peak[0] - base


def paper_model(dataset, data_dir, device):
    """The paper's MLP trained 3 epochs (cached), and test images of the dataset."""
    test = xwp.load_dataset(dataset, "test", data_dir)
    path = cache_dir() / f"bench-{dataset}-784-400-100-10.safetensors"
    if path.exists():
        ck = xwp.load_checkpoint(path)
        model = ck.model
    else:
        train = xwp.load_dataset(dataset, "train", data_dir)
        model = xwp.MLP((784, 400, 100, 10), seed=0)
        xwp.train(model, train, test, epochs=3, seed=0, device="cpu")
        xwp.save_checkpoint(path, model, {"dataset": dataset})
    return model.to(device).eval(), test


def naive_xwp(model, model0, x, target, complementary=False):
    """The definition itself (xwp.attribution.reference): one real weight swap and one forward pass per feature."""
    ref = xwpc_reference if complementary else xwp_reference
    return ref(model, x, target, model0).reshape(len(x), -1)


def method_table(model, test, device, name, methods, quick):
    rows = []
    x1, y1 = test.images[:1].to(device), test.labels[:1].to(device)
    big = 64 if quick else 256
    xb, yb = test.images[:big].to(device), test.labels[:big].to(device)
    for m in methods:
        method = make_method(m, model)
        t1 = best_time(lambda method=method: method.attribute(x1, target=y1), device, repeat=7, min_time=2.0)
        tb = best_time(lambda method=method: method.attribute(xb, target=yb), device, repeat=2, min_time=5.0)
        rows.append(
            {
                "dataset": name,
                "method": METHODS[m].label,
                "ms/img @1": 1e3 * t1,
                f"ms/img @{big}": 1e3 * tb / big,
                "img/s": big / tb,
            }
        )
        measure_later(rows[-1], lambda method=method: method.attribute(xb, target=yb), device)
        print(
            f"  {name:14s} {METHODS[m].label:22s} {1e3 * t1:9.2f} ms @1  {1e3 * tb / big:9.3f} ms/img @{big}  "
            f"{big / tb:9.0f} img/s",
            flush=True,
        )
    return rows


def gemm_gflops(n, k, m, device, dtype=torch.float32):
    a = torch.randn(n, k, device=device, dtype=dtype)
    b = torch.randn(k, m, device=device, dtype=dtype)
    c = torch.randn(m, device=device, dtype=dtype)
    t = best_time(lambda: torch.addmm(c, a, b), device, repeat=20, min_time=1.0)
    return 2 * n * k * m / t / 1e9


def xwp_vs_baselines(model, test, device, name):
    from captum.attr import Occlusion

    x, y = test.images[:64].to(device), test.labels[:64].to(device)
    nnz = int((x != 0).sum())
    x_naive, y_naive = x[:8], y[:8]
    model0 = model.initial_model()
    soft = lambda z: torch.softmax(model(z), 1)  # noqa: E731
    occ = Occlusion(soft)
    t_occ = min(
        best_time(
            lambda p=p: occ.attribute(
                x, target=y, sliding_window_shapes=(1, 1, 1), baselines=0.0, perturbations_per_eval=p
            ),
            device,
            repeat=2,
        )
        for p in (64, 256)
    )
    flops = nnz * 2 * (400 * 100 + 100 * 10)
    peak = gemm_gflops(max(nnz, 4096), 400, 100, device)
    rows = []
    for label, cls, comp in (("XWP", XWP, False), ("XWPᶜ", XWPc, True)):
        method = cls(model)
        t = best_time(lambda method=method: method.attribute(x, target=y), device, repeat=10, min_time=2.0)
        t_naive = best_time(lambda comp=comp: naive_xwp(model, model0, x_naive, y_naive, comp), device, repeat=1)
        t_naive *= len(x) / len(x_naive)
        gflops = flops / t / 1e9
        rows.append(
            {
                "dataset": name,
                "method": label,
                "ms / 64 images": 1e3 * t,
                "naive (s / 64 images)": t_naive,
                "x naive": t_naive / t,
                "Occlusion 1x1 (ms / 64)": 1e3 * t_occ,
                "x Occlusion": t_occ / t,
                "nonzero fraction": nnz / x.numel(),
                "GFLOP/s": gflops,
                "GEMM GFLOP/s": peak,
                "% roofline": 100 * gflops / peak,
            }
        )
        print(
            f"  {name:14s} {label:5s} {1e3 * t:8.2f} ms/64  x{t_naive / t:7.0f} vs naive  "
            f"x{t_occ / t:5.1f} vs Occlusion 1x1  {gflops:6.1f} GFLOP/s = {100 * gflops / peak:4.0f}% of "
            f"{peak:.0f} (GEMM of the same shape)",
            flush=True,
        )
    return rows


def one_image(model, test, device):
    x, y = test.images[:1].to(device), test.labels[:1].to(device)
    a, b = XWP(model), XWPc(model)
    t = best_time(lambda: (a.attribute(x, target=y), b.attribute(x, target=y)), device, repeat=50, min_time=2.0)
    return 1e3 * t


def scaling(device, density=0.2, widths=(100, 200, 400, 800, 1200, 1600, 2000), inputs=(784, 3072), batch=64):
    rows = []
    gen = torch.Generator().manual_seed(0)
    for d in inputs:
        x = torch.rand(batch, d, generator=gen)
        x[torch.rand(batch, d, generator=gen) > density] = 0
        x = x.to(device)
        for w in widths:
            model = xwp.MLP((d, w, max(10, w // 4), 10), seed=0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn(p.shape, generator=gen))
            model = model.to(device).eval()
            for label, cls in (("XWP", XWP), ("XWPᶜ", XWPc)):
                method = cls(model)
                t = best_time(lambda m=method, x=x: m.attribute(x, target=0), device, repeat=5, min_time=1.0)
                rows.append({"inputs": d, "width": w, "method": label, "ms/img": 1e3 * t / batch})
                measure_later(rows[-1], lambda m=method, x=x: m.attribute(x, target=0), device)
        print(
            f"  scaling inputs={d}: "
            + ", ".join(f"{r['width']}:{r['ms/img']:.3f}" for r in rows if r["inputs"] == d and r["method"] == "XWP"),
            flush=True,
        )
    return rows


def bounded_memory(model, test, device, n=10_000):
    """Peak memory of XWP on ``n`` images in one call, and of a whole ``evaluate`` on them."""
    from xwp.data.datasets import ImageSet

    reps = -(-n // len(test))
    images = test.images.repeat(reps, 1, 1, 1)[:n]
    labels = test.labels.repeat(reps)[:n]
    data = ImageSet(images, labels, test.classes, test.name, "test")
    x, y = images.to(device), labels.to(device)
    rows = []
    for label, fn in (
        (f"XWP, {n} images in one call", lambda: XWP(model).attribute(x, target=y)),
        (f"XWPᶜ, {n} images in one call", lambda: XWPc(model).attribute(x, target=y)),
        (f"evaluate(XWP, random), {n} images", lambda: xwp.evaluate(model, data, ["xwp", "random"], n=n)),
    ):
        t0 = time.perf_counter()
        fn()
        sync(device)
        seconds = time.perf_counter() - t0
        rows.append({"work": label, "seconds": seconds, "inputs MB": images.numel() * 4 / 2**20})
        measure_later(rows[-1], fn, device)
        print(f"  {label:45s} {seconds:7.1f} s", flush=True)
    return rows


def write_report(lines, out):
    """Print the report ``lines`` and write them to ``out`` (its folder made if needed)."""
    text = "\n".join(lines) + "\n"
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(f"wrote {out}")
    return text


def markdown(rows):
    if not rows:
        return ""
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="torchvision-layout folder with FashionMNIST (optional)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", default="all")
    p.add_argument("--quick", action="store_true", help="batch 64 instead of 256, fewer scaling points")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    device = torch.device(args.device)
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    datasets = ["typeface"] + (["fashion-mnist"] if args.data_dir else [])
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    if device.type == "cuda":
        where = torch.cuda.get_device_name(0)
    else:
        where = f"CPU {cpu}, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}", flush=True)
    per_method, versus, single = [], [], {}
    for name in datasets:
        model, test = paper_model(name, args.data_dir if name != "typeface" else None, device)
        print(f"[{name}] XWP / XWPc against the naive loop and Captum Occlusion (64 images)", flush=True)
        versus += xwp_vs_baselines(model, test, device, name)
        single[name] = one_image(model, test, device)
        print(f"  one image, XWP + XWPc: {single[name]:.2f} ms", flush=True)
        print(f"[{name}] every method", flush=True)
        per_method += method_table(model, test, device, name, methods, args.quick)
    print("[bounded memory: 10,000 images]", flush=True)
    memory = bounded_memory(model, test, device) if not args.quick else []
    print("[scaling]", flush=True)
    widths = (100, 400, 1000, 2000) if args.quick else (100, 200, 400, 800, 1200, 1600, 2000)
    scale = scaling(device, widths=widths)
    print("[peak memory of everything above, measured last]", flush=True)
    run_memory_jobs()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu"
    fig = scaling_figure(scale, where)
    plots.save(fig, out / f"bench_scaling_{tag}.png", dpi=100)
    text = [
        f"# Speed benchmark ({where}; torch {torch.__version__})",
        "",
        "Command: `python -m bench.speed"
        + (f" --data-dir {args.data_dir}" if args.data_dir else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + "`",
        "",
        "## XWP and XWPc against a naive weight-swapping loop and Captum Occlusion 1x1 (64 images)",
        "",
        markdown(versus),
        "",
        "## One image (XWP + XWPc)",
        "",
        "\n".join(f"- {k}: {v:.2f} ms" for k, v in single.items()),
        "",
        "## Every method",
        "",
        markdown(per_method),
        "",
        f"## Bounded memory ({datasets[-1]} test images, repeated to 10,000)",
        "",
        markdown(memory),
        "",
        f"## Scaling (batch of 64, 20% non-zero inputs; figure: bench_scaling_{tag}.png)",
        "",
        markdown(scale),
        "",
    ]
    (out / f"bench_{tag}.md").write_text("\n".join(text))
    print(f"wrote {out / f'bench_{tag}.md'} and {out / f'bench_scaling_{tag}.png'}")


def scaling_figure(rows, where):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for d in sorted({r["inputs"] for r in rows}):
        for label, style in (("XWP", "o-"), ("XWPᶜ", "s--")):
            pts = [(r["width"], r["ms/img"]) for r in rows if r["inputs"] == d and r["method"] == label]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{label}, {d} inputs")
    ax.set_xlabel("first hidden width (second = width / 4)")
    ax.set_ylabel("ms per image (batch of 64)")
    ax.set_title(f"XWP cost against network size\n{where}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()

"""The faithfulness study: the paper's Table 1 and Figures 3-6 on real data, over several seeds.

For each dataset and seed: train the paper's 784-400-100-10 MLP for 10 epochs, evaluate
every method on the same ``n`` test images with the pinned protocol (:mod:`xwp.metrics`),
and keep the per-image scores. Outputs (all small): ``study.csv`` (mean and std over
seeds), ``per_seed.csv``, ``study.md`` (Markdown tables), ``deletion_<dataset>.png``
(Figure 4) and ``heatmaps_<dataset>.png`` (Figures 3, 5, 6).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xwp import plots
from xwp.attribution import METHODS, methods_tagged
from xwp.data import DATASETS, load_dataset
from xwp.devices import default_device
from xwp.errors import XWPError
from xwp.evaluation import check_request, evaluate
from xwp.metrics import METRICS
from xwp.train import TrainConfig, fit

#: registry tags: every method for the study, the paper's seven for the figures
STUDY_METHODS = methods_tagged("study")
FIGURE_METHODS = methods_tagged("figure")

#: Table 1 of the paper for its TMNIST and FMNIST rows: one value per metric marked
#: ``in_paper_table`` (Average Drop at 20%, Deletion AUC), in :data:`~xwp.metrics.METRICS` order.
PAPER_TABLE1 = {
    "tmnist": {
        "occlusion": (0.327, 0.126),
        "shapley": (0.357, 0.095),
        "rise": (0.33, 0.17),
        "ig": (0.35, 0.157),
        "lrp": (0.285, 0.203),
        "xwp": (0.308, 0.138),
        "xwpc": (0.352, 0.162),
    },
    "fashion-mnist": {
        "occlusion": (0.636, 0.489),
        "shapley": (0.633, 0.491),
        "rise": (0.622, 0.564),
        "ig": (0.661, 0.461),
        "lrp": (0.645, 0.551),
        "xwp": (0.647, 0.473),
        "xwpc": (0.655, 0.524),
    },
}
#: which of our datasets stands in for which paper row
PAPER_ROW = {"typeface": "tmnist", "tmnist": "tmnist", "fashion-mnist": "fashion-mnist"}


@dataclass
class StudyResult:
    """Per-seed tables, the summary over seeds and where the files went."""

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path]


def run_study(
    datasets: Sequence[str] = ("typeface", "fashion-mnist", "mnist"),
    seeds: Sequence[int] = (0, 1, 2),
    n: int = 1000,
    methods: Sequence[str] = STUDY_METHODS,
    data_dir: str | None = None,
    out_dir: str | Path = "study-out",
    epochs: int = 10,
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Train, evaluate and write the study's tables and figures (see the module docstring).

    Dataset names, ``n`` and the methods are checked against every test split before any
    training starts.
    """
    methods = list(dict.fromkeys(methods))
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise XWPError(f"unknown dataset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(DATASETS)}")
    if not seeds:
        raise XWPError("give at least one seed")
    for name in datasets:
        ddir = data_dir if DATASETS[name].needs_path else None
        check_request(load_dataset(name, "test", ddir), methods, n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = default_device()
    frames, timings, figures = [], [], {}
    started = time.perf_counter()
    for name in datasets:
        ddir = data_dir if name in DATASETS and DATASETS[name].needs_path else None
        train_set, test_set = load_dataset(name, "train", ddir), load_dataset(name, "test", ddir)
        for seed in seeds:
            t0 = time.perf_counter()
            config = TrainConfig(dataset=name, data_dir=ddir, hidden=(400, 100), epochs=epochs, seed=seed)
            fitted = fit(config, train_set, test_set, device=device)
            model, history = fitted.model, fitted.history
            t1 = time.perf_counter()
            ev = evaluate(model, test_set, methods, n=n, seed=seed)
            t2 = time.perf_counter()
            row = ev.table.reset_index()
            row.insert(0, "seed", seed)
            row.insert(0, "dataset", name)
            row["test_accuracy"] = history.test_accuracy[-1]
            correct = ev.table_correct()
            for m in METRICS:
                row[f"{m}_correct_only"] = correct.loc[row["method"], f"{m}_mean"].to_numpy()
            frames.append(row)
            timings.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "train_s": t1 - t0,
                    "evaluate_s": t2 - t1,
                    "test_accuracy": history.test_accuracy[-1],
                }
            )
            log(
                f"{name} seed {seed}: accuracy {history.test_accuracy[-1]:.4f}, train {t1 - t0:.0f} s, "
                f"evaluate {n} images x {len(methods)} methods {t2 - t1:.0f} s"
            )
            if seed == seeds[0]:
                figures[name] = ev
    per_seed = pd.concat(frames, ignore_index=True)
    summary = summarize_seeds(per_seed)
    files = [out / "per_seed.csv", out / "study.csv", out / "timings.csv"]
    per_seed.to_csv(files[0], index=False, float_format="%.5f")
    summary.to_csv(files[1], index=False, float_format="%.5f")
    pd.DataFrame(timings).to_csv(files[2], index=False, float_format="%.2f")
    for name, ev in figures.items():
        files += write_figures(ev, name, out)
    total = time.perf_counter() - started
    info = {
        "datasets": list(datasets),
        "seeds": list(seeds),
        "n": n,
        "methods": list(methods),
        "epochs": epochs,
        "device": str(device),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "total_seconds": round(total, 1),
    }
    (out / "study.json").write_text(json.dumps(info, indent=2))
    md = study_markdown(summary, pd.DataFrame(timings), info)
    (out / "study.md").write_text(md)
    files += [out / "study.json", out / "study.md"]
    log(f"study finished in {total / 60:.1f} min; wrote {', '.join(str(f) for f in files)}")
    return StudyResult(per_seed, summary, files)


def summarize_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each per-seed mean, per dataset and method."""
    cols = [f"{m}_mean" for m in METRICS] + [f"{m}_correct_only" for m in METRICS] + ["seconds_per_image"]
    g = per_seed.groupby(["dataset", "method"], sort=False)
    mean = g[cols].mean()
    std = g[cols].std(ddof=0)
    out = pd.DataFrame(index=mean.index)
    for c in cols:
        base = c.replace("_mean", "")
        out[base] = mean[c]
        out[f"{base}_std"] = std[c]
    out["test_accuracy"] = g["test_accuracy"].mean()
    out["seeds"] = g.size()
    return out.reset_index()


def write_figures(ev, name: str, out: Path) -> list[Path]:
    """The deletion-curves figure (Fig. 4) and a heatmap grid (Figs. 3, 5, 6) for one dataset."""
    shown = [m for m in FIGURE_METHODS if m in ev.deletion] + [m for m in ev.deletion if m not in FIGURE_METHODS]
    curves_path = out / f"deletion_{name}.png"
    fig = plots.curves_figure(
        {METHODS[m].label: ev.deletion[m] for m in shown},
        title=f"Deletion curves, {name} ({ev.settings['n']} test images)",
        fraction_max=0.5,
    )
    plots.save(fig, curves_path, dpi=100)
    grid_path = out / f"heatmaps_{name}.png"
    ex = ev.examples
    maps = {METHODS[m].label: ex["attributions"][m] for m in FIGURE_METHODS if m in ex["attributions"]}
    fig = plots.method_grid(
        ex["images"], ex["labels"], ex["classes"], maps, title=f"Attribution maps, {name} (true class)"
    )
    plots.save(fig, grid_path, dpi=80)
    return [curves_path, grid_path]


def _fmt(mean: float, std: float) -> str:
    """``mean ± std`` with three decimals."""
    return f"{mean:.3f} ± {std:.3f}"


def study_markdown(summary: pd.DataFrame, timings: pd.DataFrame, info: dict) -> str:
    """Markdown tables: ours per dataset, and ours beside the paper's Table 1."""
    paper_metrics = [m for m in METRICS.values() if m.in_paper_table]
    lines = [f"# Faithfulness study ({info['n']} test images, seeds {info['seeds']}, {info['device']})", ""]
    lines += ["Mean ± std over seeds of the per-seed means. Pinned protocol: see `xwp/metrics.py`.", ""]
    for name, sub in summary.groupby("dataset", sort=False):
        acc = timings[timings.dataset == name]["test_accuracy"]
        lines += [f"## {name} (test accuracy {acc.mean():.4f} ± {acc.std(ddof=0):.4f})", ""]
        header = ["method"] + [f"{m.label} {m.arrow}" for m in METRICS.values()]
        header += [f"{m.short} {m.arrow} (correct only)" for m in paper_metrics] + ["ms / image"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, r in sub.iterrows():
            cells = [METHODS[r.method].label] + [_fmt(r[m], r[f"{m}_std"]) for m in METRICS]
            cells += [f"{r[f'{m.name}_correct_only']:.3f}" for m in paper_metrics]
            cells.append(f"{1000 * r.seconds_per_image:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    header = ["dataset (ours / paper)", "method"]
    header += [f"{m.short} {m.arrow} {who}" for m in paper_metrics for who in ("ours", "paper")]
    lines += ["## Beside the paper's Table 1", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, sub in summary.groupby("dataset", sort=False):
        paper = PAPER_TABLE1.get(PAPER_ROW.get(name, ""), {})
        for _, r in sub.iterrows():
            if r.method in paper:
                cells = [f"{name} / {PAPER_ROW[name]}", METHODS[r.method].label]
                for m, theirs in zip(paper_metrics, paper[r.method], strict=True):
                    cells += [f"{r[m.name]:.3f}", f"{theirs:.3f}"]
                lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Time", "", "| dataset | seed | test accuracy | train (s) | evaluate (s) |"]
    lines.append("|---|---|---|---|---|")
    for _, t in timings.iterrows():
        lines.append(f"| {t.dataset} | {t.seed} | {t.test_accuracy:.4f} | {t.train_s:.1f} | {t.evaluate_s:.1f} |")
    lines += ["", f"Total: {info['total_seconds'] / 60:.1f} min on {info['device']} ({info['cpu_threads']} threads)."]
    return "\n".join(lines) + "\n"


def rank_check(summary: pd.DataFrame) -> list[str]:
    """Methods that fail to beat random order on every metric of the paper's Table 1, per dataset.

    Each metric's direction comes from :data:`~xwp.metrics.METRICS` (Average Drop: higher is
    better; Deletion AUC: lower is better).
    """
    checked = [m for m in METRICS.values() if m.in_paper_table]
    problems = []
    for name, sub in summary.groupby("dataset", sort=False):
        rnd = sub[sub.method == "random"]
        if rnd.empty:
            continue
        rnd = rnd.iloc[0]
        for _, r in sub[sub.method != "random"].iterrows():
            if not all(m.better(r[m.name], rnd[m.name]) for m in checked):
                scores = ", ".join(f"{m.short} {r[m.name]:.3f} vs {rnd[m.name]:.3f}" for m in checked)
                problems.append(f"{name}: {r.method} does not beat random order ({scores})")
    return problems

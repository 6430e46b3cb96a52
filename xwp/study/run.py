"""The faithfulness study: the paper's Table 1 and Figures 3-6 on real data, over several seeds.

For each dataset, network family (``archs``: the paper's 784-400-100-10 MLP and/or
:class:`xwp.CNN`) and seed: train the network for 10 epochs, evaluate every method on the
same ``n`` test images with the protocol of :mod:`xwp.evaluation.metrics`, in each output space and
under each removal, and keep the per-image scores. Each (dataset, arch, seed, method) is one
cell; :mod:`xwp.study.executors` runs the cells here or as Ray tasks. Every table has an ``arch``
column. Outputs (all small): ``study.csv`` (mean and std over seeds), ``per_seed.csv``,
``timings.csv``, ``significance.csv`` (Holm-corrected Wilcoxon tests, images of all seeds
pooled, per dataset and arch), ``study.md`` (one section per dataset and arch, and the
significance statements), ``deletion_<dataset>.png`` (Figure 4) and
``heatmaps_<dataset>.png`` (Figures 3, 5, 6); with more than one arch the figures are
``deletion_<dataset>_<arch>.png`` and ``heatmaps_<dataset>_<arch>.png``.

The default methods are the registry's ``study`` set on every network, plus its
``study-conv`` set on a CNN (``ad-occlusion``, which on an MLP equals ``occlusion``).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from xwp.attribution import METHODS, methods_tagged
from xwp.data.datasets import DATASETS, load_dataset
from xwp.devices import default_device
from xwp.errors import XWPError
from xwp.evaluation import faithfulness as F
from xwp.evaluation import stats
from xwp.evaluation.metrics import METRICS, PINNED
from xwp.evaluation.protocol import KEYS, check_request, combine
from xwp.study.executors import StudyPlan, run_cells
from xwp.viz import plots

#: registry tags: every method for the study, the methods added for CNNs only, the paper's seven for the figures
STUDY_METHODS = methods_tagged("study")
CONV_STUDY_METHODS = methods_tagged("study-conv")
FIGURE_METHODS = methods_tagged("figure")
#: the families the study trains (:data:`xwp.train.ARCHS`)
STUDY_ARCHS = ("mlp", "cnn")


def _keys(table: pd.DataFrame, *rest: str) -> list[str]:
    """``dataset``, then ``arch`` when the table has it (tables written before CNNs do not), then ``rest``."""
    return ["dataset"] + (["arch"] if "arch" in table else []) + list(rest)


#: Table 1 of the paper for its TMNIST and FMNIST rows: (Average Drop at 20%, Deletion AUC),
#: the metrics of :data:`PAPER_METRICS` in that order.
PAPER_METRICS = ("average_drop", "deletion_auc")
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
    """Per-seed tables, the summary over seeds, the pooled paired tests and where the files went."""

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path]
    tests: pd.DataFrame | None = None
    agreement: pd.DataFrame | None = None


def run_study(
    datasets: Sequence[str] = ("typeface", "fashion-mnist", "mnist"),
    seeds: Sequence[int] = (0, 1, 2),
    n: int = 1000,
    methods: Sequence[str] | None = None,
    data_dir: str | None = None,
    out_dir: str | Path = "study-out",
    epochs: int = 10,
    log: Callable[[str], None] = print,
    outputs: Sequence[str] = ("softmax", "logits"),
    removals: Sequence[str] = ("zero",),
    sensitivity_samples: int = 0,
    executor: str = "serial",
    address: str | None = None,
    ray_options: dict[str, Any] | None = None,
    archs: Sequence[str] = ("mlp",),
    channels: Sequence[int] = (32, 64),
    kernel: int = 3,
) -> StudyResult:
    """Train, evaluate and write the study's tables, tests and figures (see the module docstring).

    Dataset names, ``n``, the methods, outputs and removals are checked against every test
    split before any training starts. ``executor="ray"`` runs every (dataset, seed, method)
    cell as a Ray task (``address``: a cluster; None: a local Ray); the numbers equal the
    serial run's (:mod:`xwp.study.executors`).

    ``archs``: the families trained per (dataset, seed), ``"mlp"`` and/or ``"cnn"``
    (``channels`` and ``kernel`` size the CNN, as ``python -m xwp train --arch cnn``).
    ``methods``: None for the defaults (:func:`study_methods`: ``ad-occlusion`` on CNNs only);
    given, exactly those on every network.
    """
    archs = list(dict.fromkeys(archs))
    bad = [a for a in archs if a not in STUDY_ARCHS]
    if bad or not archs:
        raise XWPError(f"unknown architecture(s) {', '.join(bad) or '(none given)'}; choose from mlp, cnn")
    conv_methods: tuple[str, ...] = ()
    if methods is None:
        methods, conv_methods = STUDY_METHODS, CONV_STUDY_METHODS
    methods = list(dict.fromkeys(methods))
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise XWPError(f"unknown dataset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(DATASETS)}")
    if not seeds:
        raise XWPError("give at least one seed")
    for name in datasets:
        ddir = data_dir if DATASETS[name].needs_path else None
        check_request(load_dataset(name, "test", ddir), [*methods, *conv_methods], n, outputs, removals)
    plan = StudyPlan(
        tuple(datasets),
        tuple(seeds),
        tuple(methods),
        n,
        epochs,
        data_dir,
        tuple(outputs),
        tuple(removals),
        sensitivity_samples,
        archs=tuple(archs),
        channels=tuple(channels),
        kernel=kernel,
        conv_methods=conv_methods,
    )
    for arch in archs:  # the sizes are checked before any training starts
        plan.config(datasets[0], arch, seeds[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cells = run_cells(plan, executor, address, log, ray_options)
    frames, timings, figures, pooled, described = [], [], {}, [], {}
    for (name, arch, seed), evs in cells.evaluations.items():
        ev = combine(evs)
        trained = cells.trained[(name, arch, seed)]
        described[arch] = trained.model.describe()
        row = ev.table.drop(columns=["label"])
        correct = ev.table_correct().set_index(KEYS)
        for m in METRICS:
            row[f"{m}_correct_only"] = correct[f"{m}_mean"].reindex(pd.MultiIndex.from_frame(row[KEYS])).to_numpy()
        row.insert(0, "seed", seed)
        row.insert(0, "arch", arch)
        row.insert(0, "dataset", name)
        row["test_accuracy"] = trained.test_accuracy
        frames.append(row)
        image = ev.per_image["image"] + seeds.index(seed) * n
        pooled.append(ev.per_image.assign(dataset=name, arch=arch, seed=seed, image=image))
        timings.append(
            {
                "dataset": name,
                "arch": arch,
                "seed": seed,
                "train_s": trained.seconds,
                "evaluate_s": cells.seconds[(name, arch, seed)],
                "test_accuracy": trained.test_accuracy,
            }
        )
        if seed == seeds[0]:
            figures[(name, arch)] = ev
    per_seed = pd.concat(frames, ignore_index=True)
    summary = summarize_seeds(per_seed)
    pooled_all = pd.concat(pooled, ignore_index=True)
    tests = pooled_tests(pooled_all)
    agreement = removal_agreement(pooled_all)
    files = [out / "per_seed.csv", out / "study.csv", out / "timings.csv", out / "significance.csv"]
    per_seed.to_csv(files[0], index=False, float_format="%.5f")
    summary.to_csv(files[1], index=False, float_format="%.5f")
    pd.DataFrame(timings).to_csv(files[2], index=False, float_format="%.2f")
    tests.to_csv(files[3], index=False, float_format="%.4g")
    if len(agreement):
        files.append(out / "removal_agreement.csv")
        agreement.to_csv(files[-1], index=False, float_format="%.4f")
    for (name, arch), ev in figures.items():
        files += write_figures(ev, name, out, arch if len(archs) > 1 else None)
    total = time.perf_counter() - started
    info = {
        "datasets": list(datasets),
        "archs": list(archs),
        "models": described,
        "seeds": list(seeds),
        "n": n,
        "methods": list(methods),
        "methods_per_arch": {a: list(plan.methods_for(a)) for a in archs},
        "outputs": list(outputs),
        "removals": list(removals),
        "sensitivity_samples": sensitivity_samples,
        "epochs": epochs,
        "executor": executor,
        "device": str(default_device()),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "total_seconds": round(total, 1),
    }
    (out / "study.json").write_text(json.dumps(info, indent=2))
    md = study_markdown(summary, pd.DataFrame(timings), info, tests, agreement)
    (out / "study.md").write_text(md)
    files += [out / "study.json", out / "study.md"]
    log(f"study finished in {total / 60:.1f} min; wrote {', '.join(str(f) for f in files)}")
    return StudyResult(per_seed, summary, files, tests, agreement)


def pooled_tests(per_image: pd.DataFrame, metrics: Sequence[str] = PINNED) -> pd.DataFrame:
    """Holm-corrected Wilcoxon tests per (dataset, arch, output, removal, metric), images of all seeds pooled.

    An image of seed s is its own unit (``image`` already made unique per seed); each test
    pairs two methods on the same (seed, image) of the same network family.
    """
    keys = _keys(per_image, "output", "removal")
    rows = []
    for case, sub in per_image.groupby(keys, sort=False):
        for m in metrics:
            if m not in sub or sub[m].isna().all():
                continue
            t = stats.paired_tests(sub, m, F.DIRECTIONS[m])
            rows.append(t.assign(**dict(zip(keys, case, strict=True)), metric=m))
    first = [*keys, "metric"]
    if not rows:
        return pd.DataFrame(columns=[*first, "method_a", "method_b", "p_holm"])
    out = pd.concat(rows, ignore_index=True)
    return out[first + [c for c in out.columns if c not in first]]


def removal_agreement(per_image: pd.DataFrame, metrics: Sequence[str] = PINNED) -> pd.DataFrame:
    """Spearman correlation of the methods' mean scores (random order left out) between every two removals.

    One row per (dataset, arch, output, metric, removal_a, removal_b): does the ranking of the
    methods survive a change of what "removing a pixel" means? Empty with one removal.
    """
    rows = []
    data = per_image[per_image["method"] != "random"]
    if "arch" not in data:
        data = data.assign(arch="mlp")
    for (dataset, arch, output), sub in data.groupby(["dataset", "arch", "output"], sort=False):
        removals = list(dict.fromkeys(sub["removal"]))
        for m in metrics:
            if m == "max_sensitivity" or m not in sub or sub[m].isna().all():
                continue  # max-sensitivity does not depend on the removal
            means = sub.groupby(["removal", "method"], sort=False)[m].mean().unstack(0)
            for i, a in enumerate(removals):
                for b in removals[i + 1 :]:
                    rho = means[a].corr(means[b], method="spearman")
                    rows.append({"dataset": dataset, "arch": arch, "output": output, "metric": m, "removal_a": a,
                                 "removal_b": b, "spearman": rho, "methods": len(means)})  # fmt: skip
    columns = ["dataset", "arch", "output", "metric", "removal_a", "removal_b", "spearman", "methods"]
    return pd.DataFrame(rows, columns=columns)


def summarize_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each per-seed mean, per dataset, arch, method, output and removal."""
    metric_cols = [m for m in METRICS if f"{m}_mean" in per_seed]
    cols = [f"{m}_mean" for m in metric_cols] + [f"{m}_correct_only" for m in metric_cols] + ["seconds_per_image"]
    keys = _keys(per_seed, "method", *[k for k in ("output", "removal") if k in per_seed])
    g = per_seed.groupby(keys, sort=False)
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


def write_figures(ev, name: str, out: Path, arch: str | None = None) -> list[Path]:
    """The deletion-curves figure (Fig. 4) and a heatmap grid (Figs. 3, 5, 6) for one dataset (and ``arch``).

    With ``arch`` the files are named ``deletion_<name>_<arch>.png`` and ``heatmaps_<name>_<arch>.png``.
    """
    shown = [m for m in FIGURE_METHODS if m in ev.deletion] + [m for m in ev.deletion if m not in FIGURE_METHODS]
    stem, what = (f"{name}_{arch}", f"{name}, {arch.upper()}") if arch else (name, name)
    curves_path = out / f"deletion_{stem}.png"
    fig = plots.curves_figure(
        {METHODS[m].label: ev.deletion[m] for m in shown},
        title=f"Deletion curves, {what} ({ev.settings['n']} test images)",
        fraction_max=0.5,
    )
    plots.save(fig, curves_path, dpi=100)
    grid_path = out / f"heatmaps_{stem}.png"
    ex = ev.examples
    maps = {METHODS[m].label: ex["attributions"][m] for m in FIGURE_METHODS if m in ex["attributions"]}
    fig = plots.method_grid(
        ex["images"], ex["labels"], ex["classes"], maps, title=f"Attribution maps, {what} (true class)"
    )
    plots.save(fig, grid_path, dpi=80)
    return [curves_path, grid_path]


def _fmt(mean: float, std: float, seeds: int = 2) -> str:
    """``mean ± std`` with three decimals (the mean alone for a single seed, which has no spread)."""
    return f"{mean:.3f}" if seeds == 1 else f"{mean:.3f} ± {std:.3f}"


def study_markdown(
    summary: pd.DataFrame,
    timings: pd.DataFrame,
    info: dict,
    tests: pd.DataFrame | None = None,
    agreement: pd.DataFrame | None = None,
) -> str:
    """Markdown: a table per dataset, arch, output space and removal; the paper's Table 1 beside ours; significance.

    One ``##`` section per (dataset, arch) (per dataset for tables without ``arch``), named
    with the network ``info["models"][arch]`` describes when given.
    """
    paper_metrics = [METRICS[m] for m in PAPER_METRICS]
    shown = [METRICS[m] for m in PINNED if m in summary and summary[m].notna().any()]
    lines = [f"# Faithfulness study ({info['n']} test images, seeds {info['seeds']}, {info['device']})", ""]
    lines += [
        "Mean ± std over seeds of the per-seed means. Protocol: docs/evaluation.md (raw probability or logit of "
        "the true class, not divided by its intact value). ↑ higher is better, ↓ lower is better.",
        "",
    ]
    keys = [k for k in ("output", "removal") if k in summary]
    section_keys = _keys(summary)
    for section, sub in summary.groupby(section_keys, sort=False):
        section = section if isinstance(section, tuple) else (section,)
        name = section[0]
        acc = timings[timings.dataset == name]
        if len(section) > 1:
            arch = section[1]
            acc = acc[acc.arch == arch] if "arch" in acc else acc
            name = f"{name}, {_arch_title(arch, info)}"
        acc = acc["test_accuracy"]
        lines += [f"## {name} (test accuracy {acc.mean():.4f} ± {acc.std(ddof=0):.4f})", ""]
        for case, part in sub.groupby(keys, sort=False) if keys else [((), sub)]:
            case = case if isinstance(case, tuple) else (case,)
            if keys:
                lines += [f"### {', '.join(f'{k} {v}' for k, v in zip(keys, case, strict=True))}", ""]
            header = ["method"] + [f"{m.label} {m.arrow}" for m in shown]
            header += [f"{m.short} {m.arrow} (correct only)" for m in paper_metrics] + ["ms / image"]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for _, r in part.iterrows():
                cells = [METHODS[r.method].label] + [_fmt(r[m.name], r[f"{m.name}_std"], r.seeds) for m in shown]
                cells += [f"{r[f'{m.name}_correct_only']:.3f}" for m in paper_metrics]
                cells.append(f"{1000 * r.seconds_per_image:.2f}")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    header = ["dataset (ours / paper)", "method"]
    header += [f"{m.short} {m.arrow} {who}" for m in paper_metrics for who in ("ours", "paper")]
    lines += ["## Beside the paper's Table 1", ""]
    lines += [
        "Ours: softmax, zero removal, raw probabilities; the paper's numbers may be normalised differently, "
        "so compare rankings rather than values. The paper's network is the MLP; CNN rows are ours alone.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    base = summary
    if "output" in summary:
        base = summary[(summary.output == "softmax") & (summary.removal == "zero")]
    for section, sub in base.groupby(_keys(base), sort=False):
        section = section if isinstance(section, tuple) else (section,)
        name = section[0]
        paper = PAPER_TABLE1.get(PAPER_ROW.get(name, ""), {})
        ours = name if len(section) == 1 or section[1] == "mlp" else f"{name} ({section[1].upper()})"
        for _, r in sub.iterrows():
            if r.method in paper:
                cells = [f"{ours} / {PAPER_ROW[name]}", METHODS[r.method].label]
                for m, theirs in zip(paper_metrics, paper[r.method], strict=True):
                    cells += [f"{r[m.name]:.3f}", f"{theirs:.3f}"]
                lines.append("| " + " | ".join(cells) + " |")
    if agreement is not None and len(agreement):
        lines += ["", "## Does the ranking survive a change of removal?", ""]
        lines += [
            "Spearman correlation of the methods' mean scores (random order left out) between two removals.",
            "",
            "| dataset | arch | output | metric | removals | Spearman |",
            "|---|---|---|---|---|---|",
        ]
        for r in agreement.itertuples(index=False):
            label = METRICS[r.metric].label
            removals = f"{r.removal_a} vs {r.removal_b}"
            lines.append(f"| {r.dataset} | {r.arch} | {r.output} | {label} | {removals} | {r.spearman:.2f} |")
    if tests is not None:
        lines += significance_markdown(tests, info)
    lines += ["", "## Time", "", "| dataset | arch | seed | test accuracy | train (s) | evaluate (s) |"]
    lines.append("|---|---|---|---|---|---|")
    for _, t in timings.iterrows():
        arch = t.get("arch", "mlp")
        cells = f"{t.test_accuracy:.4f} | {t.train_s:.1f} | {t.evaluate_s:.1f}"
        lines.append(f"| {t.dataset} | {arch} | {t.seed} | {cells} |")
    lines += ["", f"Total: {info['total_seconds'] / 60:.1f} min on {info['device']} ({info['cpu_threads']} threads)."]
    return "\n".join(lines) + "\n"


def _arch_title(arch: str, info: dict) -> str:
    """``MLP 784-400-100-10`` or ``CNN 1x28x28 c32-c64 ...``: the family and, when ``info`` has it, the network."""
    model = info.get("models", {}).get(arch)
    return f"{arch.upper()} {model.removeprefix(arch + ' ')}" if model else arch.upper()


def significance_markdown(tests: pd.DataFrame, info: dict) -> list[str]:
    """Which methods are significantly better than which, per dataset, arch, output space, removal and metric."""
    seeds = len(info["seeds"])
    lines = [
        "",
        "## Significant differences",
        "",
        f"Wilcoxon signed-rank tests on paired per-image scores ({info['n']} images"
        + (f" x {seeds} seeds pooled), " if seeds > 1 else ", one seed), ")
        + "Holm-corrected over the method pairs of each (dataset, arch, output, removal, metric); alpha 0.05. "
        "A pair that is not listed is not significantly different. Full table: significance.csv.",
    ]
    labels = {m: METHODS[m].label for m in METHODS}
    for case, sub in tests.groupby(_keys(tests, "output", "removal"), sort=False):
        *where, output, removal = case
        where[1:] = [a.upper() for a in where[1:]]  # the arch, when the table has one
        lines += ["", f"### {', '.join(where)}, {output}, {removal} removal", ""]
        for metric, t in sub.groupby("metric", sort=False):
            said = stats.statements(t, metric, labels)
            n_pairs = len(t)
            lines.append(f"- **{METRICS[metric].label}** ({len(said)} of {n_pairs} pairs significant)")
            lines += [f"  - {line}" for line in said]
    return lines


def rank_check(summary: pd.DataFrame) -> list[str]:
    """Methods that fail to beat random order on every metric of the paper's Table 1, per dataset (and case).

    Each metric's direction comes from :data:`~xwp.evaluation.metrics.METRICS` (Average Drop: higher is
    better; Deletion AUC: lower is better).
    """
    checked = [METRICS[m] for m in PAPER_METRICS]
    keys = _keys(summary, *[k for k in ("output", "removal") if k in summary])
    problems = []
    for case, sub in summary.groupby(keys, sort=False):
        case = case if isinstance(case, tuple) else (case,)
        where = ", ".join(str(c) for c in case)
        rnd = sub[sub.method == "random"]
        if rnd.empty:
            continue
        rnd = rnd.iloc[0]
        for _, r in sub[sub.method != "random"].iterrows():
            if not all(m.better(r[m.name], rnd[m.name]) for m in checked):
                scores = ", ".join(f"{m.short} {r[m.name]:.3f} vs {rnd[m.name]:.3f}" for m in checked)
                problems.append(f"{where}: {r.method} does not beat random order ({scores})")
    return problems

"""The evaluation's evidence: sanity checks, the initial-state ablation and removal robustness, per dataset.

Train the checkpoints first (the paper's 784-400-100-10 MLP, 10 epochs, seed 0)::

    python -m xwp train --dataset typeface --epochs 10 --seed 0 --out CK/typeface.safetensors
    python -m xwp train --dataset fashion-mnist --data-dir DATA --epochs 10 --seed 0 --out CK/fashion-mnist.safetensors
    python -m xwp train --dataset mnist --data-dir DATA --epochs 10 --seed 0 --out CK/mnist.safetensors

then, one part at a time::

    python -m bench.evidence sanity --checkpoints CK --data-dir DATA --n 64
    python -m bench.evidence initial-state --checkpoints CK --data-dir DATA --n 200
    python -m bench.evidence removals --checkpoints CK --data-dir DATA --n 100 \
        --removal zero,mean,blur,deactivation,revert
    python -m bench.evidence agreement --checkpoints CK --methods xwp,xwpc,occlusion,ig,lrp,deeplift,pathwise

Each part writes ``docs/results/<part>.md`` and its CSVs (``--out`` changes the folder;
``--tag`` adds a suffix to the file names, e.g. for a smaller ROAD run). The library code is
:mod:`xwp.evaluation.sanity`, :mod:`xwp.evaluation.ablation`, :func:`xwp.evaluate` and
:func:`xwp.study.removal_agreement`; this script only chooses sizes and writes tables.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import xwp
from xwp.checkpoint import load_checkpoint
from xwp.evaluation import ablation, sanity, stats
from xwp.evaluation.faithfulness import DIRECTIONS
from xwp.evaluation.metrics import PINNED
from xwp.study.run import removal_agreement

SANITY_METHODS = "xwp,xwpc,occlusion,ig,lrp,saliency,deeplift,pathwise,lrp-epsilon-plus-flat,lrp-gamma-box,random"
SCORES = ("deletion_auc", "insertion_auc", "srg", "average_drop", "faithfulness_correlation", "max_sensitivity")


def load(args, dataset: str):
    """The checkpoint, test split and training split of ``dataset``."""
    ddir = args.data_dir if xwp.DATASETS[dataset].needs_path else None
    ck = load_checkpoint(Path(args.checkpoints) / f"{dataset}.safetensors")
    return ck, xwp.load_dataset(dataset, "test", ddir), xwp.load_dataset(dataset, "train", ddir)


def header(title: str, args, seconds: float, extra: list[str]) -> list[str]:
    """The common head of every results file: command, sizes, machine, time."""
    command = "python -m bench.evidence " + shlex.join(sys.argv[1:])
    return [
        f"# {title}",
        "",
        f"Command: `{command}` (checkpoints: `python -m xwp train --dataset D --epochs 10 --seed 0`, "
        "the paper's 784-400-100-10 MLP; see the docstring of bench/evidence.py).",
        "",
        f"Machine: {platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
        + (f"; {args.note}" if args.note else "")
        + f". Took {seconds / 60:.1f} min.",
        "",
        *extra,
    ]


def fmt(v: float, digits: int = 3) -> str:
    """A number for a Markdown table."""
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}g}"


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (floats to ``digits`` significant digits)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [fmt(row[c], digits) if isinstance(row[c], float) else str(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def part_sanity(args) -> None:
    """Cascading randomisation (initial state fixed) and label randomisation, per dataset."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    frames, label_frames, accuracies = [], [], {}
    started = time.perf_counter()
    for dataset in args.datasets.split(","):
        ck, test, train = load(args, dataset)
        s = test.sample(args.n, args.seed)
        t0 = time.perf_counter()
        table = sanity.cascading_randomisation(
            ck.model, s.images, s.labels, methods, initial_model=ck.initial_model, seed=args.seed
        )
        t1 = time.perf_counter()
        sub = train.sample(min(args.label_train, len(train)), args.seed)
        labels = sanity.label_randomisation(
            sub.images, sub.labels, s.images, s.labels, methods, epochs=args.label_epochs, seed=args.seed
        )
        t2 = time.perf_counter()
        print(f"{dataset}: cascading {t1 - t0:.0f} s, labels {t2 - t1:.0f} s", flush=True)
        accuracies[dataset] = (float(labels["accuracy_true"].iloc[0]), float(labels["accuracy_shuffled"].iloc[0]))
        frames.append(table.assign(dataset=dataset))
        label_frames.append(labels.assign(dataset=dataset))
    cascade = pd.concat(frames, ignore_index=True)
    labels = pd.concat(label_frames, ignore_index=True)
    out = Path(args.out)
    cascade.to_csv(out / f"sanity_cascading{args.tag}.csv", index=False, float_format="%.4f")
    labels.to_csv(out / f"sanity_labels{args.tag}.csv", index=False, float_format="%.4f")
    seconds = time.perf_counter() - started
    lines = header(
        "Sanity checks (Adebayo et al. 2018): cascading model-parameter randomisation and label randomisation",
        args,
        seconds,
        [
            f"{args.n} test images per dataset (seed {args.seed}), target = the true label. Cascading: the "
            "trained layers re-drawn from their initialiser top layer first, the **initial state held fixed** "
            "(`xwp.evaluation.sanity.cascading_randomisation`). Label randomisation: a 784-64-10 MLP trained "
            f"{args.label_epochs} epochs on {args.label_train} training images with true and with shuffled labels "
            "from the same initial state (`xwp.evaluation.sanity.label_randomisation`). Numbers: mean over images "
            "of the "
            "Spearman correlation of the *signed* maps with the intact (true-label) model's, on all pixels and on "
            f"the non-zero pixels; a row passes when the non-zero correlation is below {sanity.THRESHOLD}. "
            "CSVs: `sanity_cascading.csv`, `sanity_labels.csv`.",
            "",
        ],
    )
    for dataset in args.datasets.split(","):
        c = cascade[cascade.dataset == dataset]
        lab = labels[labels.dataset == dataset].set_index("method")
        layers = list(dict.fromkeys(c["layer"]))
        rows = []
        for m in methods:
            cm = c[c.method == m].set_index("layer")
            row = {"method": m}
            for layer in layers:
                row[f"nonzero, to {layer}"] = float(cm.loc[layer, "spearman_nonzero"])
            row["all px, all layers"] = float(cm.loc[layers[-1], "spearman_all"])
            row["cascading"] = "pass" if bool(cm["passed"].all()) else "FAIL"
            row["labels nonzero"] = float(lab.loc[m, "spearman_nonzero"])
            row["labels all px"] = float(lab.loc[m, "spearman_all"])
            row["labels"] = "pass" if bool(lab.loc[m, "passed"]) else "FAIL"
            rows.append(row)
        acc_true, acc_shuf = accuracies[dataset]
        constant = [m for m in methods if c[c.method == m]["spearman_all"].isna().all()]
        note = (
            f"Blank cells: the maps of {', '.join(constant)} are constant over the pixels (Spearman undefined; "
            "counted as FAIL)."
            if constant
            else ""
        )
        lines += [
            f"## {dataset}",
            "",
            f"Layers re-drawn cumulatively from the top ({' → '.join(layers)}). Label-randomisation models: "
            f"test accuracy on these images {acc_true:.3f} (true labels) vs {acc_shuf:.3f} (shuffled).",
            "",
            markdown_table(pd.DataFrame(rows)),
            "",
            note,
            "",
        ]
    (out / f"sanity{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def part_initial_state(args) -> None:
    """XWP from the true, zero, fresh and permuted initial state: identity, rank agreement and every metric."""
    started = time.perf_counter()
    agreements, summaries, tests, identity = [], [], [], []
    outputs = ("softmax", "logits")
    for dataset in args.datasets.split(","):
        ck, test, _ = load(args, dataset)
        model = ck.model.double()  # float64: softmax differences of confident predictions survive
        s = test.sample(args.n, args.seed)
        x, y = s.images.double(), s.labels
        t0 = time.perf_counter()
        for output in outputs:
            maps = ablation.ablation_maps(model, x, y, seed=args.seed, output=output)
            if output == "softmax":
                diff = (maps["xwp_zeros"] - 2 * maps["occlusion"]).abs().max().item()
                captum = xwp.make_method("occlusion", model).attribute(x, target=y)
                identity.append(
                    {
                        "dataset": dataset,
                        "max abs(XWP(zeros) − 2 Occlusion), float64": diff,
                        "max abs(Occlusion)": maps["occlusion"].abs().max().item(),
                        "max abs(XWP(zeros) − 2 Captum Occlusion)": (maps["xwp_zeros"] - 2 * captum).abs().max().item(),
                    }
                )
            agreements.append(ablation.rank_agreement(maps, x).assign(dataset=dataset, output=output))
        t1 = time.perf_counter()
        per = []
        for v in ablation.VARIANTS:
            init = ablation.variant_initial_model(model, v, args.seed)
            ev = xwp.evaluate(
                model,
                test,
                ["xwp"],
                n=args.n,
                seed=args.seed,
                initial_model=init,
                outputs=outputs,
                sensitivity_samples=args.sensitivity_samples,
            )
            per.append(ev.per_image.assign(method=f"xwp_{v}"))
        per_image = pd.concat(per, ignore_index=True)
        for output in outputs:
            sub = per_image[per_image.output == output]
            summaries.append(stats.summarize(sub, list(SCORES), seed=args.seed).reset_index().assign(
                dataset=dataset, output=output))  # fmt: skip
            for m in SCORES:
                t = stats.paired_tests(sub, m, DIRECTIONS[m])
                tests.append(t.assign(dataset=dataset, output=output, metric=m))
        print(f"{dataset}: maps {t1 - t0:.0f} s, scores {time.perf_counter() - t1:.0f} s", flush=True)
    agreement = pd.concat(agreements, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True)
    test_table = pd.concat(tests, ignore_index=True)
    ident = pd.DataFrame(identity)
    out = Path(args.out)
    agreement.to_csv(out / f"initial_state_agreement{args.tag}.csv", index=False, float_format="%.4f")
    summary.to_csv(out / f"initial_state_scores{args.tag}.csv", index=False, float_format="%.5g")
    test_table.to_csv(out / f"initial_state_tests{args.tag}.csv", index=False, float_format="%.4g")
    seconds = time.perf_counter() - started
    lines = header(
        "What the initial state adds: XWP from the true, zero, freshly drawn and permuted initial weights",
        args,
        seconds,
        [
            f"{args.n} test images per dataset (seed {args.seed}), target = the true label, the checkpoint "
            "converted to float64. Variants of the first layer's initial weights W0 "
            "(`xwp.evaluation.ablation`): `true`; "
            "`zeros` (then XWP = 2 × Occlusion 1×1, baseline 0, on softmax); `fresh` (a new draw of the same "
            "initialiser); `permuted` (W0's entries permuted). Occlusion = "
            "`xwp.evaluation.ablation.occlusion_1x1` (exact, "
            "float64). Scores: `xwp.evaluate` (zero removal, 200 curve steps, max-sensitivity with "
            f"{args.sensitivity_samples} draws), mean [95 % bootstrap CI]; paired tests: Wilcoxon signed-rank, "
            "Holm-corrected over the 6 pairs. CSVs: `initial_state_agreement.csv`, `initial_state_scores.csv`, "
            "`initial_state_tests.csv`.",
            "",
            "## The identity XWP(W0 = 0) = 2 × Occlusion (softmax)",
            "",
            markdown_table(ident),
            "",
        ],
    )
    for dataset in args.datasets.split(","):
        lines += [f"## {dataset}", ""]
        for output in outputs:
            a = agreement[(agreement.dataset == dataset) & (agreement.output == output)]
            lines += [
                f"Foreground Spearman, median [quartiles] over images ({output}):",
                "",
                markdown_table(
                    pd.DataFrame(
                        {
                            "a": a["a"],
                            "b": a["b"],
                            "median": a["median"],
                            "q25": a["q25"],
                            "q75": a["q75"],
                        }
                    ),
                    3,
                ),
                "",
            ]
        for output in outputs:
            sm = summary[(summary.dataset == dataset) & (summary.output == output)]
            rows = []
            for _, r in sm.iterrows():
                row = {"variant": r["method"]}
                for m in SCORES:
                    row[m] = f"{fmt(r[f'{m}_mean'])} [{fmt(r[f'{m}_ci_low'])}, {fmt(r[f'{m}_ci_high'])}]"
                rows.append(row)
            t = test_table[(test_table.dataset == dataset) & (test_table.output == output)]
            sig = t[t["significant"]]
            said = [f"{r.better} better than {r.method_b if r.better == r.method_a else r.method_a} on {r.metric} "
                    f"(Holm p = {r.p_holm:.2g})" for r in sig.itertuples()]  # fmt: skip
            lines += [
                f"Scores, {output}, zero removal (mean [95 % CI]):",
                "",
                markdown_table(pd.DataFrame(rows)),
                "",
                f"Significant differences ({output}): " + ("; ".join(said) if said else "none") + ".",
                "",
            ]
    (out / f"initial_state{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def part_removals(args) -> None:
    """Every method under several removal operators, both output spaces; rank agreement across operators."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    removals = tuple(r.strip() for r in args.removal.split(",") if r.strip())
    started = time.perf_counter()
    tables, pooled = [], []
    for dataset in args.datasets.split(","):
        ck, test, train = load(args, dataset)
        t0 = time.perf_counter()
        ev = xwp.evaluate(
            ck.model,
            test,
            methods,
            n=args.n,
            seed=args.seed,
            initial_model=ck.initial_model,
            outputs=("softmax", "logits"),
            removals=removals,
            train_mean=train.images.double().mean(0).reshape(-1) if "mean" in removals else None,
            sensitivity_samples=0,
        )
        print(f"{dataset}: {time.perf_counter() - t0:.0f} s", flush=True)
        tables.append(ev.table.assign(dataset=dataset))
        pooled.append(ev.per_image.assign(dataset=dataset))
    table = pd.concat(tables, ignore_index=True)
    per_image = pd.concat(pooled, ignore_index=True)
    agreement = removal_agreement(per_image, [m for m in PINNED if m != "max_sensitivity"])
    out = Path(args.out)
    table.to_csv(out / f"removals{args.tag}.csv", index=False, float_format="%.5g")
    agreement.to_csv(out / f"removal_agreement{args.tag}.csv", index=False, float_format="%.4f")
    seconds = time.perf_counter() - started
    lines = header(
        "Removal robustness: does the ranking of methods survive a change of what 'removing a pixel' means?",
        args,
        seconds,
        [
            f"{args.n} test images per dataset (seed {args.seed}), target = the true label; methods "
            f"{', '.join(methods)}; removals {', '.join(removals)}; both output spaces; 200 curve steps; "
            "max-sensitivity skipped (it does not depend on the removal). **`revert` (first-layer weights back "
            "to W0) is XWP's own perturbation and favours XWP and XWPc by construction.** `deactivation` equals "
            "`zero` for an MLP (tested), so their agreement is 1 by construction. Agreement = Spearman "
            "correlation of the methods' mean scores between two removals, `random` left out "
            "(`xwp.study.removal_agreement`). CSVs: `removals.csv` (one row per dataset, method, output, "
            "removal: mean, median, 95 % CI, std), `removal_agreement.csv`.",
            "",
        ],
    )
    for dataset in args.datasets.split(","):
        lines += [f"## {dataset}", ""]
        for output in ("softmax", "logits"):
            a = agreement[(agreement.dataset == dataset) & (agreement.output == output)]
            piv = a.assign(pair=a["removal_a"] + " vs " + a["removal_b"]).pivot_table(
                index="pair", columns="metric", values="spearman", sort=False
            )
            piv = piv.reset_index()
            lines += [f"Rank agreement across removals ({output}, {int(a['methods'].max())} methods):", ""]
            lines += [markdown_table(piv, 2), ""]
            t = table[(table.dataset == dataset) & (table.output == output)]
            rows = []
            for m in methods:
                row = {"method": m}
                for r in removals:
                    v = t[(t.method == m) & (t.removal == r)]
                    row[f"SRG {r}"] = float(v["srg_mean"].iloc[0]) if len(v) else float("nan")
                rows.append(row)
            ranks = pd.DataFrame(rows)
            lines += [f"Mean SRG ({output}; higher is better):", "", markdown_table(ranks), ""]
    (out / f"removals{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def part_agreement(args) -> None:
    """Rank agreement across removals for a subset of methods, from the means in an earlier run's removals CSV."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    table = pd.read_csv(Path(args.out) / f"removals{args.tag}.csv")
    table = table[table["method"].isin(methods)]
    rows = []
    for (dataset, output), sub in table.groupby(["dataset", "output"], sort=False):
        removals = list(dict.fromkeys(sub["removal"]))
        for m in [m for m in PINNED if m != "max_sensitivity"]:
            means = sub.pivot(index="method", columns="removal", values=f"{m}_mean")
            for i, a in enumerate(removals):
                for b in removals[i + 1 :]:
                    rho = means[a].corr(means[b], method="spearman")
                    rows.append({"dataset": dataset, "output": output, "metric": m, "removal_a": a,
                                 "removal_b": b, "spearman": rho, "methods": len(means)})  # fmt: skip
    agreement = pd.DataFrame(rows)
    path = Path(args.out) / f"removal_agreement_subset{args.tag}.csv"
    agreement.to_csv(path, index=False, float_format="%.4f")
    pairs = agreement.assign(pair=agreement["removal_a"] + " vs " + agreement["removal_b"])
    summary = pairs.groupby(["pair", "output"], sort=False)["spearman"].agg(["min", "median", "max"]).reset_index()
    print(f"methods: {', '.join(methods)}; over datasets and metrics:")
    print(markdown_table(summary, 2))
    print(f"wrote {path}")


def main() -> None:
    """Parse the arguments and run one part."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["sanity", "initial-state", "removals", "agreement"])
    p.add_argument("--checkpoints", required=True, help="folder with <dataset>.safetensors")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--datasets", default="typeface,fashion-mnist,mnist")
    p.add_argument("--methods", default=SANITY_METHODS)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-train", type=int, default=10000, help="training images for label randomisation")
    p.add_argument("--label-epochs", type=int, default=5)
    p.add_argument("--sensitivity-samples", type=int, default=3)
    p.add_argument("--removal", default="zero,mean,blur,road,deactivation,revert")
    p.add_argument("--tag", default="", help="suffix for the output file names")
    p.add_argument("--note", default="", help="a remark on the machine for the header (e.g. its load)")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    parts = {"sanity": part_sanity, "initial-state": part_initial_state, "removals": part_removals}
    parts["agreement"] = part_agreement
    parts[args.part](args)


if __name__ == "__main__":
    main()

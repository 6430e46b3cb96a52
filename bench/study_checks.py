"""Checks behind the study's discrepancies, on one dataset and seed (the study's model, retrained).

    python -m bench.study_checks --data-dir ../shared/data [--dataset fashion-mnist] [--n 1000]

1. Precision: the methods that difference softmax outputs (Occlusion, Shapley) in float32
   against float64; XWP and IG for reference. (This check is why Occlusion now computes in
   float64 by default.)
2. Saliency: Captum's default absolute gradient against the signed gradient.
3. The removed-feature value: the protocol's 0 against the training set's mean pixel (what a
   removed feature becomes when inputs are standardised and "removed" means 0 after that).

Prints Markdown tables and writes them to ``docs/results/checks_<dataset>.md``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import xwp


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    ddir = args.data_dir if args.dataset in xwp.DATASETS and xwp.DATASETS[args.dataset].needs_path else None
    train, test = xwp.load_dataset(args.dataset, "train", ddir), xwp.load_dataset(args.dataset, "test", ddir)
    model = xwp.MLP((784, 400, 100, 10), seed=args.seed)
    history = xwp.train(model, train, test, epochs=10, seed=args.seed, device="cpu")
    out = [
        f"# Checks on {args.dataset}, seed {args.seed}, {args.n} test images "
        f"(model: 784-400-100-10, 10 epochs, test accuracy {history.test_accuracy[-1]:.4f})",
        "",
        f"Command: `python -m bench.study_checks --dataset {args.dataset}"
        + (" --data-dir DIR" if ddir else "")
        + f" --n {args.n}`",
        "",
    ]

    def run(title, mdl, methods, **kw):
        t0 = time.perf_counter()
        ev = xwp.evaluate(mdl, test, methods, n=args.n, seed=args.seed, **kw)
        text = f"## {title}\n\n{ev.markdown()}\n\n(took {time.perf_counter() - t0:.0f} s)\n"
        print(text, flush=True)
        out.append(text)
        return ev

    methods = ["xwp", "occlusion", "shapley", "ig"]
    run("float32 everywhere (Occlusion with dtype=None)", model, methods, method_options={"occlusion": {"dtype": None}})
    run("float32 model, Occlusion computed in float64 (its default)", model, ["occlusion"])
    run("float64 model (the same model, converted)", copy.deepcopy(model).double(), methods)
    run("Saliency, absolute gradient (Captum's default; the study)", model, ["saliency", "random"])
    run("Saliency, signed gradient (abs=False)", model, ["saliency"], method_options={"saliency": {"abs": False}})
    run(
        "Removed features set to the training set's per-pixel mean instead of 0",
        model,
        ["xwp", "xwpc", "occlusion", "ig", "random"],
        removals=("mean",),
        train_mean=train.images.double().mean(0).reshape(-1),
    )
    path = Path(args.out) / f"checks_{args.dataset}.md"
    path.write_text("\n".join(out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Command line: ``python -m xwp train | explain | evaluate | sanity | study``.

Errors a user can cause print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xwp.errors import XWPError


def _methods(text: str) -> list[str]:
    """Comma-separated method names, checked against the registry."""
    from xwp.attribution import METHODS

    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if text.strip().lower() == "all":
        return list(METHODS)
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise XWPError(
            f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)} or 'all'"
        )
    return names


def _out_path(path: str, suffixes: tuple[str, ...]) -> Path:
    """Check an output path's suffix and folder before any work is done."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise XWPError(f"--out must end with {' or '.join(suffixes)}, got {path}")
    if not p.parent.exists():
        raise XWPError(f"folder {p.parent} does not exist")
    return p


def cmd_train(args: argparse.Namespace) -> None:
    """Train an MLP and write a checkpoint."""
    from tqdm import tqdm

    from xwp.checkpoint import save_checkpoint
    from xwp.data import load_dataset
    from xwp.train import TrainConfig, build_model, fit

    out = _out_path(args.out, (".safetensors",))
    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        hidden=args.hidden,
        epochs=args.epochs,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        init=args.init,
    ).check()
    train_set = load_dataset(args.dataset, "train", args.data_dir)
    test_set = load_dataset(args.dataset, "test", args.data_dir)
    model = build_model(config, train_set.images[0].numel(), len(train_set.classes))
    bar = tqdm(total=args.epochs, desc=f"training {model.describe()} on {args.dataset}", unit="epoch")

    def progress(p):
        if p.epoch_done:
            bar.update(1)
            bar.set_postfix(loss=f"{p.loss:.4f}", test_acc=f"{p.history.test_accuracy[-1]:.4f}")

    try:
        fitted = fit(config, train_set, test_set, model=model, progress=progress)
    finally:
        bar.close()
    save_checkpoint(out, fitted.model, fitted.meta)
    print(f"test accuracy {fitted.history.test_accuracy[-1]:.4f}; wrote {out}")


def _load(args: argparse.Namespace):
    """The checkpoint named by ``--checkpoint``."""
    from xwp.checkpoint import load_checkpoint
    from xwp.devices import default_device

    return load_checkpoint(args.checkpoint, device=default_device())


def cmd_explain(args: argparse.Namespace) -> None:
    """Attribute one image with one or more methods; write a PNG figure or the raw maps."""
    import numpy as np
    import torch

    from xwp import plots
    from xwp.attribution import METHODS, make_method
    from xwp.data import image_to_input, load_dataset, load_image
    from xwp.devices import model_device

    out = _out_path(args.out, (".png", ".npy"))
    methods = _methods(args.method)
    ckpt = _load(args)
    classes = ckpt.meta.get("classes") or [str(i) for i in range(ckpt.model.sizes[-1])]
    if args.image:
        x = image_to_input(load_image(args.image))
        label, source = None, args.image
    else:
        dataset = args.dataset or ckpt.meta.get("dataset", "typeface")
        data = load_dataset(dataset, "test", args.data_dir or ckpt.meta.get("data_dir"))
        if not 0 <= args.index < len(data):
            raise XWPError(f"--index must be in 0..{len(data) - 1} for the {dataset} test split, got {args.index}")
        x, label = data.images[args.index : args.index + 1], int(data.labels[args.index])
        source = f"{dataset} test image {args.index}"
    device = model_device(ckpt.model)
    x = x.to(device)
    with torch.no_grad():
        probs = torch.softmax(ckpt.model(x), 1)[0].cpu()
    pred = int(probs.argmax())
    target = pred if args.target is None else args.target
    if not 0 <= target < len(classes):
        raise XWPError(f"--target must be in 0..{len(classes) - 1}, got {target}")
    maps = {}
    for name in methods:
        maps[name] = make_method(name, ckpt.model, ckpt.initial_model).attribute(x, target=target)[0].cpu()
    if out.suffix == ".npy":
        stacked = torch.stack([maps[m] for m in methods]).numpy()
        np.save(out, stacked)
        print(f"wrote {out}: array {stacked.shape} (methods in order: {', '.join(methods)})")
        return
    title = f"{source}: predicted {classes[pred]} ({probs[pred]:.2f})"
    if label is not None:
        title += f", true {classes[label]}"
    title += f"; explaining {classes[target]}"
    fig = plots.attribution_figure(
        x[0].cpu(),
        {METHODS[m].label: a for m, a in maps.items()},
        shared_scale=args.shared_scale,
        overlay=args.overlay,
        title=title,
    )
    plots.save(fig, out)
    print(f"wrote {out}")


def _names(text: str, known, what: str) -> list[str]:
    """Comma-separated names checked against ``known`` (``what`` names them in the error)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in known]
    if bad or not names:
        raise XWPError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def _train_mean(args: argparse.Namespace, dataset: str):
    """The training split's per-pixel mean (for the ``mean`` removal)."""
    from xwp.data import load_dataset

    return load_dataset(dataset, "train", args.data_dir).images.double().mean(0).reshape(-1)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate methods on test images; write one CSV row per (method, output, removal) with CIs."""
    from tqdm import tqdm

    from xwp import plots
    from xwp.attribution import METHODS
    from xwp.data import load_dataset
    from xwp.evaluation import check_request, evaluate
    from xwp.faithfulness import OUTPUTS
    from xwp.metrics import PINNED
    from xwp.removal import REMOVALS

    out = _out_path(args.out, (".csv",))
    if args.curves:
        _out_path(args.curves, (".png",))
    methods = _methods(args.methods)
    removals = _names(args.removal, list(REMOVALS), "removal(s)")
    outputs = _names(args.output, list(OUTPUTS), "output(s)")
    ckpt = _load(args)
    data = load_dataset(args.dataset, "test", args.data_dir)
    check_request(data, methods, args.n, outputs, removals)
    train_mean = _train_mean(args, args.dataset) if "mean" in removals else None
    bar = tqdm(total=100, desc="evaluating", unit="%")

    def progress(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message)
        bar.refresh()

    try:
        ev = evaluate(
            ckpt.model,
            data,
            methods,
            n=args.n,
            seed=args.seed,
            initial_model=ckpt.initial_model,
            batch_size=args.batch_size,
            progress=progress,
            outputs=outputs,
            removals=removals,
            train_mean=train_mean,
            relative=args.relative,
            sensitivity_samples=args.sensitivity_samples,
        )
    finally:
        bar.close()
    table = ev.summary(correct_only=args.correct_only)
    table.to_csv(out, index=False, float_format="%.6g")
    for output in outputs:
        for removal in removals:
            print(f"\n{output}, {removal} removal:\n" + ev.markdown(output, removal))
    lines = ev.statements(PINNED, correct_only=args.correct_only)
    print(f"\n{len(lines)} significant differences (Wilcoxon signed-rank, Holm-corrected, alpha 0.05)")
    for line in lines[: args.show_statements]:
        print(" -", line)
    print(f"wrote {out}")
    if args.curves:
        fig = plots.curves_figure(
            {
                METHODS[m].label: c
                for m, c in ev.curve_set("deletion", outputs[0], removals[0], args.correct_only).items()
            },
            title=f"Deletion curves, {args.dataset}, {args.n} test images ({outputs[0]}, {removals[0]} removal)",
        )
        plots.save(fig, args.curves)
        print(f"wrote {args.curves}")


def cmd_sanity(args: argparse.Namespace) -> None:
    """Cascading model-parameter randomisation: one CSV row per (method, randomised layer)."""
    from xwp.data import load_dataset
    from xwp.devices import model_device
    from xwp.sanity import cascading_randomisation

    out = _out_path(args.out, (".csv",))
    methods = _methods(args.methods)
    ckpt = _load(args)
    dataset = args.dataset or ckpt.meta.get("dataset", "typeface")
    data = load_dataset(dataset, "test", args.data_dir or ckpt.meta.get("data_dir"))
    if not 1 <= args.n <= min(len(data), 1000):
        raise XWPError(f"--n must be between 1 and {min(len(data), 1000)}, got {args.n}")
    sample = data.sample(args.n, args.seed)
    device = model_device(ckpt.model)
    table = cascading_randomisation(
        ckpt.model,
        sample.images.to(device),
        sample.labels.to(device),
        methods,
        initial_model=ckpt.initial_model,
        seed=args.seed,
    )
    table.to_csv(out, index=False, float_format="%.6g")
    shown = table.set_index(["method", "layer"])[["spearman_all", "spearman_nonzero", "passed"]]
    print(shown.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}")


def cmd_study(args: argparse.Namespace) -> None:
    """Run the faithfulness study (Table 1 and Figures 3-6 over seeds)."""
    from xwp.data import DATASETS
    from xwp.faithfulness import OUTPUTS
    from xwp.removal import REMOVALS
    from xwp.study import rank_check, run_study

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    needs = [d for d in datasets if d in DATASETS and DATASETS[d].needs_path]
    if needs and not args.data_dir:
        raise XWPError(f"{', '.join(needs)} need --data-dir (e.g. ../shared/data)")
    seeds = [int(s) for s in args.seeds.split(",")]
    removals = _names(args.removal, list(REMOVALS), "removal(s)")
    outputs = _names(args.output, list(OUTPUTS), "output(s)")
    if args.address and args.executor != "ray":
        raise XWPError("--address needs --executor ray")
    result = run_study(
        datasets,
        seeds,
        n=args.n,
        methods=_methods(args.methods),
        data_dir=args.data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        outputs=outputs,
        removals=removals,
        sensitivity_samples=args.sensitivity_samples,
        executor=args.executor,
        address=args.address,
        ray_options={"num_cpus": args.ray_cpus} if args.ray_cpus else None,
    )
    for line in rank_check(result.summary):
        print("warning:", line)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m xwp``."""
    from xwp.data import DATASETS
    from xwp.models import INITS
    from xwp.removal import REMOVALS
    from xwp.train import OPTIMIZERS

    p = argparse.ArgumentParser(prog="python -m xwp", description="Weight-perturbation attribution (XWP, XWPc).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP and save a checkpoint")
    t.add_argument("--dataset", default="typeface", choices=list(DATASETS))
    t.add_argument("--data-dir", help="torchvision-layout folder (mnist, fashion-mnist) or TMNIST CSV")
    t.add_argument("--hidden", default="400,100", help="hidden sizes, e.g. 400,100 (the paper) or 256")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    t.add_argument("--init", default="torch", choices=list(INITS))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="checkpoint file (.safetensors)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("explain", help="attribution maps for one image")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--method", default="xwp", help="method name(s), comma separated, or 'all'")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--index", type=int, help="index into the test split of the checkpoint's dataset")
    src.add_argument("--image", help="an image file (white digit on black, or dark on light: inverted)")
    e.add_argument("--dataset", help="dataset of --index (default: the checkpoint's)")
    e.add_argument("--data-dir")
    e.add_argument("--target", type=int, help="class to explain (default: the predicted one)")
    e.add_argument("--overlay", action="store_true", help="draw the maps over the input")
    e.add_argument(
        "--shared-scale",
        action="store_true",
        help="one colour scale for all maps (default: each map on its own symmetric scale)",
    )
    e.add_argument("--out", required=True, help="figure (.png) or raw attributions (.npy)")
    e.set_defaults(func=cmd_explain)

    v = sub.add_parser("evaluate", help="faithfulness scores with 95% intervals and paired tests (docs/evaluation.md)")
    v.add_argument("--checkpoint", required=True)
    v.add_argument("--dataset", default="typeface", choices=list(DATASETS))
    v.add_argument("--data-dir")
    v.add_argument("--methods", default="xwp,xwpc,occlusion,shapley,rise,ig,lrp,random")
    v.add_argument("--n", type=int, default=100, help="number of test images")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--batch-size", type=int, default=64)
    v.add_argument("--removal", default="zero", help="removal operator(s), comma separated: " + ", ".join(REMOVALS))
    v.add_argument("--output", default="softmax,logits", help="output space(s) explained and scored: softmax,logits")
    v.add_argument("--correct-only", action="store_true", help="summarise only correctly classified images")
    v.add_argument("--relative", action="store_true", help="divide softmax curves by the intact probability (clipped)")
    v.add_argument("--sensitivity-samples", type=int, default=5, help="noisy re-runs for max-sensitivity (0: skip)")
    v.add_argument("--show-statements", type=int, default=20, help="print at most this many significance statements")
    v.add_argument("--curves", help="also write the deletion curves figure here (.png)")
    v.add_argument("--out", required=True, help="table (.csv): one row per (method, output, removal)")
    v.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("sanity", help="cascading model-parameter randomisation (Adebayo et al. 2018)")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--dataset", help="test images from this dataset (default: the checkpoint's)")
    c.add_argument("--data-dir")
    c.add_argument("--methods", default="xwp,xwpc,occlusion,ig,lrp,random")
    c.add_argument("--n", type=int, default=32, help="number of test images")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True, help="table (.csv): one row per (method, randomised layer)")
    c.set_defaults(func=cmd_sanity)

    s = sub.add_parser("study", help="the paper's Table 1 and Figures 3-6 over datasets and seeds")
    s.add_argument("--datasets", default="typeface,fashion-mnist,mnist")
    s.add_argument("--data-dir", help="torchvision-layout folder with MNIST and FashionMNIST")
    s.add_argument("--seeds", default="0,1,2")
    s.add_argument("--n", type=int, default=1000, help="test images per dataset and seed")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--methods", default="all")
    s.add_argument("--removal", default="zero", help="removal operator(s), comma separated: " + ", ".join(REMOVALS))
    s.add_argument("--output", default="softmax,logits", help="output space(s) explained and scored")
    s.add_argument(
        "--sensitivity-samples", type=int, default=0, help="noisy re-runs per image for max-sensitivity (0: skip)"
    )
    s.add_argument("--executor", default="serial", choices=["serial", "ray"], help="where the cells run")
    s.add_argument("--address", help="Ray cluster address (default: a local Ray); needs --executor ray")
    s.add_argument("--ray-cpus", type=int, help="CPUs for a local Ray (default: all)")
    s.add_argument("--out", default="docs/results", help="output folder")
    s.set_defaults(func=cmd_study)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except XWPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

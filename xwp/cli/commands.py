"""Command line: ``python -m xwp train | explain | evaluate | sanity | study``.

Errors a user can cause, bad arguments included, print one line (``error: ...``) and exit
with status 2. Outputs are written atomically (all or nothing); ``train`` and ``study``
refuse to overwrite existing files without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xwp.cli.args import count_arg, methods_arg, names_arg, positive_arg, seed_arg, seeds_arg
from xwp.errors import XWPError, safe_message
from xwp.safety import check_out_path, write_output


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str):
        """Print ``error: message`` on one line and exit with status 2."""
        print(f"error: {safe_message(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _out_path(path: str, suffixes: tuple[str, ...], force: bool = True) -> Path:
    """Check an output path (suffix, folder, a regular file or nothing) before any work is done."""
    return check_out_path(path, suffixes, force=force)


def _save_figure(fig, out: Path) -> None:
    """Write a matplotlib figure as PNG atomically (the format does not depend on the suffix's case)."""
    from xwp.viz import plots

    write_output(out, lambda fh: plots.save(fig, fh))


def cmd_train(args: argparse.Namespace) -> None:
    """Train an MLP or a CNN and write a checkpoint."""
    from tqdm import tqdm

    from xwp.checkpoint import save_checkpoint
    from xwp.data.datasets import load_dataset
    from xwp.train import TrainConfig, build_model, fit

    out = _out_path(args.out, (".safetensors",), force=args.force)
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
        arch=args.arch,
        channels=args.channels,
        kernel=args.kernel,
    ).check()
    train_set = load_dataset(args.dataset, "train", args.data_dir)
    test_set = load_dataset(args.dataset, "test", args.data_dir)
    model = build_model(config, tuple(train_set.images[0].shape), len(train_set.classes))
    bar = tqdm(total=args.epochs, desc=f"training {model.describe()} on {args.dataset}", unit="epoch")

    def progress(p):
        if p.epoch_done:
            bar.update(1)
            bar.set_postfix(loss=f"{p.loss:.4f}", test_acc=f"{p.history.test_accuracy[-1]:.4f}")

    try:
        fitted = fit(config, train_set, test_set, model=model, progress=progress)
    finally:
        bar.close()
    history = fitted.history
    if history.diverging:
        print(
            f"warning: training diverged (loss {max(history.loss):.3g} against {history.chance_loss:.3g} at chance); "
            f"the saved model is no better than guessing: lower --lr (now {args.lr:g})",
            file=sys.stderr,
        )
    save_checkpoint(out, fitted.model, fitted.meta)
    print(f"test accuracy {history.test_accuracy[-1]:.4f}; wrote {out}")


def _load(args: argparse.Namespace):
    """The checkpoint named by ``--checkpoint``."""
    from xwp.checkpoint import load_checkpoint
    from xwp.devices import default_device

    return load_checkpoint(args.checkpoint, device=default_device())


def cmd_explain(args: argparse.Namespace) -> None:
    """Attribute one image with one or more methods; write a PNG figure or the raw maps."""
    import numpy as np
    import torch

    from xwp.attribution import METHODS, make_method
    from xwp.data.datasets import image_to_input, load_dataset, load_image
    from xwp.devices import model_device
    from xwp.viz import plots

    out = _out_path(args.out, (".png", ".npy"))
    methods = methods_arg(args.method)
    ckpt = _load(args)
    classes = ckpt.meta.get("classes") or [str(i) for i in range(ckpt.model.n_classes)]
    if args.image:
        x = image_to_input(load_image(args.image))
        label, source = None, args.image
    else:
        dataset = args.dataset or _checkpoint_dataset(ckpt)
        data = load_dataset(dataset, "test", args.data_dir)  # never a folder named by the checkpoint
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
    if out.suffix.lower() == ".npy":
        stacked = torch.stack([maps[m] for m in methods]).numpy()
        write_output(out, lambda fh: np.save(fh, stacked))
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
    _save_figure(fig, out)
    print(f"wrote {out}")


def _checkpoint_dataset(ckpt) -> str:
    """The dataset a checkpoint was trained on (typeface when it names none this xwp knows)."""
    from xwp.data.datasets import DATASETS

    name = ckpt.meta.get("dataset")
    return name if isinstance(name, str) and name in DATASETS else "typeface"


def _train_mean(args: argparse.Namespace, dataset: str):
    """The training split's per-pixel mean (for the ``mean`` removal)."""
    from xwp.data.datasets import load_dataset

    return load_dataset(dataset, "train", args.data_dir).images.double().mean(0).reshape(-1)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate methods on test images; write one CSV row per (method, output, removal) with CIs."""
    from tqdm import tqdm

    from xwp.attribution import METHODS
    from xwp.data.datasets import load_dataset
    from xwp.evaluation.faithfulness import OUTPUTS
    from xwp.evaluation.metrics import PINNED
    from xwp.evaluation.protocol import check_request, evaluate
    from xwp.evaluation.removal import REMOVALS
    from xwp.viz import plots

    out = _out_path(args.out, (".csv",))
    if args.curves:
        _out_path(args.curves, (".png",))
    methods = methods_arg(args.methods)
    removals = names_arg(args.removal, list(REMOVALS), "removal(s)")
    outputs = names_arg(args.output, list(OUTPUTS), "output(s)")
    ckpt = _load(args)
    dataset = args.dataset or _checkpoint_dataset(ckpt)
    data = load_dataset(dataset, "test", args.data_dir)
    check_request(data, methods, args.n, outputs, removals)
    train_mean = _train_mean(args, dataset) if "mean" in removals else None
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
    write_output(out, table.to_csv(index=False, float_format="%.6g").encode())
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
            title=f"Deletion curves, {dataset}, {args.n} test images ({outputs[0]}, {removals[0]} removal)",
        )
        _save_figure(fig, Path(args.curves))
        print(f"wrote {args.curves}")


def cmd_sanity(args: argparse.Namespace) -> None:
    """Cascading model-parameter randomisation: one CSV row per (method, randomised layer)."""
    from xwp.data.datasets import load_dataset
    from xwp.devices import model_device
    from xwp.evaluation.sanity import cascading_randomisation

    out = _out_path(args.out, (".csv",))
    methods = methods_arg(args.methods)
    ckpt = _load(args)
    dataset = args.dataset or ckpt.meta.get("dataset", "typeface")
    data = load_dataset(dataset, "test", args.data_dir)
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
    write_output(out, table.to_csv(index=False, float_format="%.6g").encode())
    shown = table.set_index(["method", "layer"])[["spearman_all", "spearman_nonzero", "passed"]]
    print(shown.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}")


def cmd_study(args: argparse.Namespace) -> None:
    """Run the faithfulness study (Table 1 and Figures 3-6 over seeds)."""
    from xwp.data.datasets import DATASETS
    from xwp.evaluation.faithfulness import OUTPUTS
    from xwp.evaluation.removal import REMOVALS
    from xwp.study.run import STUDY_ARCHS, rank_check, run_study
    from xwp.train import TrainConfig

    datasets = list(dict.fromkeys(d.strip() for d in args.datasets.split(",") if d.strip()))
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise XWPError(f"unknown dataset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(DATASETS)}")
    needs = [d for d in datasets if DATASETS[d].needs_path]
    if needs and not args.data_dir:
        raise XWPError(f"{', '.join(needs)} need --data-dir (e.g. ../shared/data)")
    seeds = seeds_arg(args.seeds)
    methods = None if args.methods.strip().lower() == "study" else methods_arg(args.methods)
    archs = names_arg(args.arch, list(STUDY_ARCHS), "architecture(s)")
    removals = names_arg(args.removal, list(REMOVALS), "removal(s)")
    outputs = names_arg(args.output, list(OUTPUTS), "output(s)")
    if args.address and args.executor != "ray":
        raise XWPError("--address needs --executor ray")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise XWPError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise XWPError(f"--out {out} already holds files; pass --force to overwrite them or choose a new folder")
    result = run_study(
        datasets,
        seeds,
        n=args.n,
        methods=methods,
        data_dir=args.data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        outputs=outputs,
        removals=removals,
        sensitivity_samples=args.sensitivity_samples,
        executor=args.executor,
        address=args.address,
        ray_options={"num_cpus": args.ray_cpus} if args.ray_cpus else None,
        archs=archs,
        channels=TrainConfig(arch="cnn", channels=args.channels).channels,  # one clear error for bad text
        kernel=args.kernel,
    )
    for line in rank_check(result.summary):
        print("warning:", line)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m xwp``."""
    from xwp.data.datasets import DATASETS
    from xwp.evaluation.removal import REMOVALS
    from xwp.models import INITS
    from xwp.train import ARCHS, OPTIMIZERS

    p = _Parser(prog="python -m xwp", description="Weight-perturbation attribution (XWP, XWPc).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP or a CNN and save a checkpoint")
    t.add_argument("--dataset", default="typeface", choices=list(DATASETS))
    t.add_argument("--data-dir", help="torchvision-layout folder (mnist, fashion-mnist) or TMNIST CSV")
    t.add_argument("--arch", default="mlp", choices=list(ARCHS), help="network family (default mlp)")
    t.add_argument(
        "--hidden", help="hidden sizes, e.g. 400,100 (the MLP's default, the paper) or 256; a CNN's dense head (128)"
    )
    t.add_argument("--channels", default="32,64", help="CNN: output channels of each conv block (default 32,64)")
    t.add_argument("--kernel", type=positive_arg, default=3, help="CNN: square kernel size, padding kernel // 2")
    t.add_argument("--epochs", type=positive_arg, default=10)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=positive_arg, default=128)
    t.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    t.add_argument("--init", default="torch", choices=list(INITS))
    t.add_argument("--seed", type=seed_arg, default=0)
    t.add_argument("--out", required=True, help="checkpoint file (.safetensors)")
    t.add_argument("--force", action="store_true", help="overwrite --out if it exists")
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

    v = sub.add_parser(
        "evaluate", help="faithfulness scores with 95 %% intervals and paired tests (docs/evaluation.md)"
    )
    v.add_argument("--checkpoint", required=True)
    v.add_argument("--dataset", choices=list(DATASETS), help="default: the checkpoint's dataset")
    v.add_argument("--data-dir")
    v.add_argument("--methods", default="xwp,xwpc,occlusion,shapley,rise,ig,lrp,random")
    v.add_argument("--n", type=positive_arg, default=100, help="number of test images")
    v.add_argument("--seed", type=seed_arg, default=0)
    v.add_argument("--batch-size", type=positive_arg, default=64)
    v.add_argument("--removal", default="zero", help="removal operator(s), comma separated: " + ", ".join(REMOVALS))
    v.add_argument(
        "--output",
        default="softmax,logits",
        help="output space(s) explained and scored, comma separated: softmax, logits, log-odds",
    )
    v.add_argument("--correct-only", action="store_true", help="summarise only correctly classified images")
    v.add_argument("--relative", action="store_true", help="divide softmax curves by the intact probability (clipped)")
    v.add_argument(
        "--sensitivity-samples", type=count_arg, default=5, help="noisy re-runs for max-sensitivity (0: skip)"
    )
    v.add_argument(
        "--show-statements", type=count_arg, default=20, help="print at most this many significance statements"
    )
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
    s.add_argument("--n", type=positive_arg, default=1000, help="test images per dataset and seed")
    s.add_argument("--epochs", type=positive_arg, default=10)
    s.add_argument("--methods", default="study", help="names, 'all' or 'study' (the study set; ad-occlusion: CNN only)")
    s.add_argument("--arch", default="mlp", help="network families, comma separated: mlp, cnn (default mlp)")
    s.add_argument("--channels", default="32,64", help="CNN: output channels of each conv block (default 32,64)")
    s.add_argument("--kernel", type=positive_arg, default=3, help="CNN: square kernel size, padding kernel // 2")
    s.add_argument("--removal", default="zero", help="removal operator(s), comma separated: " + ", ".join(REMOVALS))
    s.add_argument(
        "--output", default="softmax,logits", help="output space(s) explained and scored: softmax, logits, log-odds"
    )
    s.add_argument(
        "--sensitivity-samples", type=count_arg, default=0, help="noisy re-runs per image for max-sensitivity (0: skip)"
    )
    s.add_argument("--executor", default="serial", choices=["serial", "ray"], help="where the cells run")
    s.add_argument("--address", help="Ray cluster address (default: a local Ray); needs --executor ray")
    s.add_argument("--ray-cpus", type=positive_arg, help="CPUs for a local Ray (default: all)")
    s.add_argument("--out", default="study-out", help="output folder (docs/results holds the committed run)")
    s.add_argument("--force", action="store_true", help="overwrite files already in --out")
    s.set_defaults(func=cmd_study)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        args.func(args)
    except XWPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk or the file system failed under us: still one line
        print(f"error: {safe_message(e.strerror or type(e).__name__)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

"""``evaluate``: every method x output space x removal on the same test images, with statistics.

The protocol is pinned in :mod:`xwp.evaluation.metrics` (computations in :mod:`xwp.evaluation.faithfulness`);
:mod:`xwp.evaluation.stats` turns the per-image scores into means, medians, bootstrap intervals and
Holm-corrected paired tests, so a table says which differences are real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp.attribution import METHODS, make_method, methods_tagged
from xwp.config import LIMITS
from xwp.data.datasets import ImageSet
from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError
from xwp.evaluation import faithfulness as F
from xwp.evaluation import metrics, scales, stats
from xwp.evaluation.removal import REMOVALS, make_removal

#: the methods :func:`evaluate` and the Compare page use unless told otherwise (registry tag "evaluate")
DEFAULT_METHODS = methods_tagged("evaluate")
#: the summary's row keys
KEYS = ["method", "output", "removal"]
#: re-running a method this often per image for max-sensitivity (0 skips it)
SENSITIVITY_SAMPLES = 5


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    ``per_image``: one row per (method, output, removal, image) with every metric, the label,
    the intact probability ``p_target``, ``correct`` and the attribution seconds per image;
    ``curves``: ``{(method, output, removal): {"deletion": (n, 201), "insertion": (n, 201)}}``
    (the explained class's raw score, MoRF); ``examples``: the first images, labels and each
    method's maps (first output space) for heatmap grids. :meth:`summary` gives the table
    (mean, median, bootstrap 95 % interval per metric); ``correct_only=True`` everywhere
    restricts tables, curves and tests to the images the model classifies correctly.
    """

    per_image: pd.DataFrame
    curves: dict[tuple[str, str, str], dict[str, np.ndarray]]
    examples: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    _cache: dict[Any, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        """Methods in evaluation order."""
        return list(dict.fromkeys(self.per_image["method"]))

    @property
    def outputs(self) -> list[str]:
        """Output spaces scored."""
        return list(dict.fromkeys(self.per_image["output"]))

    @property
    def removals(self) -> list[str]:
        """Removal operators scored."""
        return list(dict.fromkeys(self.per_image["removal"]))

    def rows(self, correct_only: bool = False) -> pd.DataFrame:
        """The per-image rows, optionally only the correctly classified images."""
        return self.per_image[self.per_image["correct"]] if correct_only else self.per_image

    def summary(self, correct_only: bool = False, n_boot: int = stats.N_BOOT) -> pd.DataFrame:
        """One row per (method, output, removal): label, ``<metric>_mean/_median/_ci_low/_ci_high``, n, seconds."""
        key = ("summary", correct_only, n_boot)
        if key not in self._cache:
            self._cache[key] = summarize(self.rows(correct_only), n_boot, self.settings.get("seed", 0))
        return self._cache[key]

    @property
    def table(self) -> pd.DataFrame:
        """:meth:`summary` over all images."""
        return self.summary()

    def table_correct(self) -> pd.DataFrame:
        """:meth:`summary` over the correctly classified images."""
        return self.summary(correct_only=True)

    def curve_set(self, kind: str, output: str, removal: str, correct_only: bool = False) -> dict[str, np.ndarray]:
        """``{method: curves (n, 201)}`` of one kind, output space and removal (filtered like the tables)."""
        keep = self.per_image.drop_duplicates("image").set_index("image")["correct"].sort_index().to_numpy()
        out = {}
        for (m, o, r), c in self.curves.items():
            if o == output and r == removal:
                out[m] = c[kind][keep] if correct_only else c[kind]
        return out

    @property
    def deletion(self) -> dict[str, np.ndarray]:
        """Deletion curves per method in the first output space and removal."""
        return self.curve_set("deletion", self.outputs[0], self.removals[0])

    @property
    def insertion(self) -> dict[str, np.ndarray]:
        """Insertion curves per method in the first output space and removal."""
        return self.curve_set("insertion", self.outputs[0], self.removals[0])

    def significance(self, metric: str, output: str, removal: str, correct_only: bool = False) -> pd.DataFrame:
        """Holm-corrected Wilcoxon tests between every two methods (see :func:`xwp.evaluation.stats.paired_tests`)."""
        key = ("tests", metric, output, removal, correct_only)
        if key not in self._cache:
            sub = self.rows(correct_only)
            sub = sub[(sub["output"] == output) & (sub["removal"] == removal)]
            self._cache[key] = stats.paired_tests(sub, metric, F.DIRECTIONS[metric])
        return self._cache[key]

    def statements(self, metrics_: Sequence[str] = metrics.PINNED, correct_only: bool = False) -> list[str]:
        """Sentences "A is significantly better than B on m (softmax, zero removal; Holm p, n)", every case."""
        labels = {m: METHODS[m].label if m in METHODS else m for m in self.methods}
        out = []
        for output in self.outputs:
            for removal in self.removals:
                for m in metrics_:
                    if m not in self.per_image or self.per_image[m].isna().all():
                        continue
                    for s in stats.statements(self.significance(m, output, removal, correct_only), m, labels):
                        out.append(s.replace(" (Holm", f" ({output}, {removal} removal; Holm"))
        return out

    def markdown(self, output: str | None = None, removal: str | None = None, digits: int = 3) -> str:
        """The table of one output space and removal in Markdown (mean [95 % CI] per metric)."""
        return table_markdown(self.table, output or self.outputs[0], removal or self.removals[0], digits)


def format_table(table: pd.DataFrame, digits: int = 3, metrics_: Sequence[str] | None = None) -> pd.DataFrame:
    """A summary table as text: method (output, removal), ``mean [low, high]`` and median per metric, s / image."""
    out = pd.DataFrame({"method": table["label"].astype(str).to_numpy()})
    for col in ("output", "removal"):
        if table[col].nunique() > 1:
            out[col] = table[col].to_numpy()
    for m in metrics_ or metrics.METRICS:
        spec = metrics.METRICS[m]
        if f"{m}_mean" not in table.columns or table[f"{m}_mean"].isna().all():
            continue
        cells = zip(table[f"{m}_mean"], table[f"{m}_ci_low"], table[f"{m}_ci_high"], strict=True)
        d = digits
        out[f"{spec.label} {spec.arrow}"] = [f"{a:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]" for a, lo, hi in cells]
        out[f"{spec.short} median"] = [f"{v:.{digits}f}" for v in table[f"{m}_median"]]
    out["s / image"] = [f"{v:.4f}" for v in table["seconds_per_image"]]
    return out


def table_markdown(table: pd.DataFrame, output: str, removal: str, digits: int = 3) -> str:
    """A Markdown table of one output space and removal from :meth:`Evaluation.summary`."""
    sub = table[(table["output"] == output) & (table["removal"] == removal)]
    text = format_table(sub, digits)
    lines = ["| " + " | ".join(text.columns) + " |", "|" + "---|" * len(text.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def _timed(device: torch.device, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """``fn()`` and its wall time (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


@dataclass
class _Run:
    """The per-batch loop of :func:`evaluate` for one (method, output) pair, with progress and stop."""

    model: nn.Module
    sample: ImageSet
    batches: list[tuple[int, int]]
    ops: dict[str, Any]
    seed: int
    relative: bool
    sensitivity_samples: int
    progress: Callable[[float, str], None] | None
    stop: Callable[[], bool] | None
    n_examples: int
    examples: dict[str, Any]
    total: int = 1
    done: int = 0
    stopped: bool = False

    def method(self, name: str, method, output: str, keep_maps: bool, device, dtype):
        """Per-removal lists of per-batch scores and the attribution seconds; None when stopped."""
        seconds, parts = 0.0, {r: [] for r in self.ops}
        n = self.batches[-1][1]
        for start, stop in self.batches:
            if self.stop is not None and self.stop():
                self.stopped = True
                return None
            if self.progress is not None:
                self.progress(
                    self.done / self.total, f"{METHODS[name].label} ({output}): images {start + 1}-{stop} of {n}"
                )
            x = self.sample.images[start:stop].to(device=device, dtype=dtype)
            y = self.sample.labels[start:stop].to(device)
            attr, dt = _timed(device, lambda x=x, y=y: method.attribute(x, target=y))
            seconds += dt
            if start == 0 and keep_maps:
                self.examples["attributions"][name] = attr[: self.n_examples].detach().cpu().numpy()
            sens = None
            if self.sensitivity_samples:
                explain = lambda inp, t: method.attribute(inp, target=t)  # noqa: E731
                sens = F.max_sensitivity(explain, x, y, 0.2, self.sensitivity_samples, self.seed, attr).cpu().numpy()
            relative = self.relative and output == "softmax"
            for r, op in self.ops.items():
                s = F.per_image_scores(
                    self.model,
                    x,
                    y,
                    attr,
                    op,
                    output,
                    seed=self.seed,
                    index=torch.arange(start, stop),
                    relative=relative,
                )
                part = {k: v.detach().cpu() for k, v in s.items()}
                part["max_sensitivity"] = sens
                parts[r].append(part)
            self.done += 1
        return parts, seconds


def evaluate(
    model: nn.Module,
    dataset: ImageSet,
    methods: Sequence[str] = DEFAULT_METHODS,
    n: int = 100,
    seed: int = 0,
    initial_model: nn.Module | None = None,
    batch_size: int = 64,
    method_options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[float, str], None] | None = None,
    n_examples: int = 6,
    outputs: Sequence[str] = F.DEFAULT_OUTPUTS,
    removals: Sequence[str] = ("zero",),
    train_mean: torch.Tensor | None = None,
    relative: bool = False,
    sensitivity_samples: int = SENSITIVITY_SAMPLES,
    stop: Callable[[], bool] | None = None,
) -> Evaluation:
    """Attribute ``n`` seeded test images with each method in each output space and score the maps.

    Args:
        model: the trained classifier (logits); evaluated on its own device.
        dataset: usually the test split; ``n`` images are drawn with ``seed``.
        methods: names from :data:`xwp.METHODS`; each explains each of ``outputs`` (methods
            without an ``output`` option, e.g. LRP and random, give the same maps in both).
        initial_model: needed by XWP/XWPc (and the ``revert`` removal) unless ``model`` is an ``xwp.MLP``.
        batch_size: images attributed together (scores do not depend on it).
        method_options: per-method overrides of the registry defaults.
        progress: called with ``(fraction done, message)`` before each batch, naming the method running.
        outputs: any of ``"softmax"``, ``"logits"``, ``"log-odds"`` (:data:`xwp.evaluation.faithfulness.OUTPUTS`):
            what each method explains and what is scored; log-odds maps come from
            :func:`xwp.evaluation.scales.output_for` (XWP/XWPc via :func:`xwp.evaluation.scales.xwp_log_odds`).
        removals: names from :data:`xwp.evaluation.removal.REMOVALS` (``"mean"`` needs ``train_mean``).
        relative: divide softmax curves by the intact probability (clipped to [0, 1]).
        sensitivity_samples: noisy re-runs per image for max-sensitivity (0: skip, NaN).
        stop: polled between batches; when it returns True the evaluation ends with the
            (method, output) pairs finished so far (``settings["stopped"]``).

    Follows the protocol in :mod:`xwp.evaluation.metrics`: the target is the true label.
    """
    if isinstance(methods, str):
        raise XWPError("methods must be a list of names, e.g. ['xwp', 'ig'], not one text")
    methods = list(dict.fromkeys(methods))  # a method named twice is evaluated once
    check_request(dataset, methods, n, outputs, removals)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise XWPError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    sample = dataset.sample(n, seed)
    device, dtype = model_device(model), model_dtype(model)
    model.eval()
    options = method_options or {}
    ops = {r: make_removal(r, model, initial_model, train_mean) for r in removals}
    examples: dict[str, Any] = {
        "images": sample.images[:n_examples].numpy(),
        "labels": sample.labels[:n_examples].numpy(),
        "classes": sample.classes,
        "attributions": {},
        "output": outputs[0],
    }
    batches = [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
    with torch.no_grad():
        probs = torch.cat(
            [torch.softmax(model(sample.images[a:b].to(device=device, dtype=dtype)), 1).cpu() for a, b in batches]
        )
    p_target = probs.gather(1, sample.labels[:, None])[:, 0].double().numpy()
    correct = (probs.argmax(1) == sample.labels).numpy()
    frames: list[pd.DataFrame] = []
    kept: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    run = _Run(model, sample, batches, ops, seed, relative, sensitivity_samples, progress, stop, n_examples, examples)
    run.total = len(methods) * len(outputs) * len(batches)
    for name in methods:
        for output in outputs:
            opts = dict(options.get(name, {}))
            if "output" in METHODS[name].defaults:  # log-odds: xwp.evaluation.scales' callables (XWP's indicator form)
                opts["output"] = scales.output_for(F.SPACE[output], name)
            method = make_method(name, model, initial_model, **opts)
            scored = run.method(name, method, output, output == outputs[0], device, dtype)
            if scored is None:
                break
            parts, seconds = scored
            for r in removals:
                cat = {k: torch.cat([p[k] for p in parts[r]]) for k in parts[r][0] if k != "max_sensitivity"}
                # kept as float32: 10,000 images x 12 methods x 2 kinds of curves stay under 200 MB per space
                kept[(name, output, r)] = {
                    "deletion": cat["curve_deletion"].float().numpy(),
                    "insertion": cat["curve_insertion"].float().numpy(),
                }
                row = {k: v.double().numpy() for k, v in cat.items() if not k.startswith("curve_")}
                sens = [p["max_sensitivity"] for p in parts[r]]
                row["max_sensitivity"] = np.concatenate(sens) if sensitivity_samples else np.full(n, np.nan)
                frames.append(
                    pd.DataFrame(
                        {
                            "method": name,
                            "output": output,
                            "removal": r,
                            "image": np.arange(n),
                            "label": sample.labels.numpy(),
                            "p_target": p_target,
                            "correct": correct,
                            **row,
                            "seconds": seconds / n,
                        }
                    )
                )
        if run.stopped:
            break
    stopped = run.stopped
    if not frames:
        raise XWPError("the evaluation was stopped before any method finished")
    if progress is not None and not stopped:
        progress(1.0, "done")
    settings = {
        "n": n,
        "seed": seed,
        "dataset": dataset.name,
        "split": dataset.split,
        "batch_size": batch_size,
        "methods": list(dict.fromkeys(f["method"].iloc[0] for f in frames)),
        "outputs": list(outputs),
        "removals": list(removals),
        "relative": relative,
        "sensitivity_samples": sensitivity_samples,
        "device": str(device),
        "options": options,
        "stopped": stopped,
    }
    return Evaluation(pd.concat(frames, ignore_index=True), kept, examples, settings)


def combine(parts: Sequence[Evaluation]) -> Evaluation:
    """One :class:`Evaluation` from several on the same images (e.g. one per method, as the Compare page runs them)."""
    if not parts:
        raise XWPError("nothing to combine")
    first = parts[0]
    for p in parts[1:]:
        if (p.settings["n"], p.settings["seed"], p.settings["dataset"]) != (
            first.settings["n"],
            first.settings["seed"],
            first.settings["dataset"],
        ):
            raise XWPError("evaluations on different image samples cannot be combined")
    curves, maps = {}, {}
    for p in parts:
        curves.update(p.curves)
        maps.update(p.examples["attributions"])
    settings = dict(first.settings)
    settings["methods"] = [m for p in parts for m in p.settings["methods"]]
    settings["stopped"] = any(p.settings.get("stopped") for p in parts)
    examples = {**first.examples, "attributions": maps}
    return Evaluation(pd.concat([p.per_image for p in parts], ignore_index=True), curves, examples, settings)


def check_request(
    dataset: ImageSet,
    methods: Sequence[str],
    n: int,
    outputs: Sequence[str] = F.DEFAULT_OUTPUTS,
    removals: Sequence[str] = ("zero",),
) -> None:
    """Refuse unknown methods, outputs, removals and impossible image counts before any work starts."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise XWPError(f"n (the number of images) must be a whole number, got {str(n)[:40]!r}")
    if isinstance(methods, str):
        raise XWPError("methods must be a list of names, e.g. ['xwp', 'ig'], not one text")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise XWPError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not methods:
        raise XWPError("choose at least one method")
    bad = [o for o in outputs if o not in F.OUTPUTS]
    if bad or not outputs:
        raise XWPError(f"unknown output(s) {', '.join(bad) or '(none)'}; choose from {', '.join(F.OUTPUTS)}")
    bad = [r for r in removals if r not in REMOVALS]
    if bad or not removals:
        raise XWPError(f"unknown removal(s) {', '.join(bad) or '(none)'}; choose from {', '.join(REMOVALS)}")
    if n > LIMITS.max_eval_images:
        raise XWPError(f"evaluation is limited to {LIMITS.max_eval_images} images (XWP_MAX_EVAL_IMAGES), got {n}")
    if not 1 <= n <= len(dataset):
        raise XWPError(
            f"n must be between 1 and {len(dataset)} (the size of the {dataset.name} {dataset.split} split), got {n}"
        )


def summarize(per_image: pd.DataFrame, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (method, output, removal): label, mean, median, 95 % bootstrap CI and std per metric, n, seconds/image."""
    present = [m for m in metrics.METRICS if m in per_image.columns]
    if per_image.empty:
        cols = KEYS + ["label"] + [f"{m}_{s}" for m in present for s in ("mean", "median", "ci_low", "ci_high")]
        return pd.DataFrame(columns=cols + ["n", "seconds_per_image"])
    table = stats.summarize(per_image, present, n_boot, seed, by=KEYS)
    g = per_image.groupby(KEYS, sort=False)
    for m in present:
        table[f"{m}_std"] = g[m].std(ddof=0)
    table["seconds_per_image"] = g["seconds"].first()
    table = table.reset_index()
    table.insert(3, "label", [METHODS[m].label if m in METHODS else m for m in table["method"]])
    return table

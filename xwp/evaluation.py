"""``evaluate``: the paper's Table 1 for any set of methods, with curves and example maps."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp import metrics
from xwp.attribution import METHODS, make_method, methods_tagged
from xwp.config import LIMITS
from xwp.data import ImageSet
from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError

#: the methods :func:`evaluate` and the Compare page use unless told otherwise (registry tag "evaluate")
DEFAULT_METHODS = methods_tagged("evaluate")


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    ``table``: one row per method with mean and std of each metric and seconds per image;
    ``per_image``: one row per (method, image); ``deletion`` / ``insertion``: curves
    ``(n, 201)`` per method; ``examples``: the first images, labels and each method's
    attributions for them (for heatmap grids).

    The pinned score divides by the target probability on the intact image, so a
    misclassified image with a tiny probability can give a ratio far above 1 and dominate
    a mean; :meth:`table_correct` summarises the correctly classified images only.
    """

    table: pd.DataFrame
    per_image: pd.DataFrame
    deletion: dict[str, np.ndarray]
    insertion: dict[str, np.ndarray]
    examples: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def markdown(self, digits: int = 3) -> str:
        """The table in Markdown, arrows showing each metric's direction."""
        return table_markdown(self.table, digits)

    def table_correct(self) -> pd.DataFrame:
        """Like ``table``, over the images the model classifies correctly."""
        return summarize(self.per_image[self.per_image["correct"]])


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:attr:`Evaluation.table` as text: method, ``mean ± std`` per metric (its direction in the header), s / image."""
    out = pd.DataFrame({"method": [str(row.get("label", name)) for name, row in table.iterrows()]})
    for m, spec in metrics.METRICS.items():
        if f"{m}_mean" in table.columns:
            pairs = zip(table[f"{m}_mean"], table[f"{m}_std"], strict=True)
            out[f"{spec.label} {spec.arrow}"] = [f"{a:.{digits}f} ± {b:.{digits}f}" for a, b in pairs]
    out["s / image"] = [f"{v:.4f}" for v in table["seconds_per_image"]]
    return out


def table_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A Table-1-style Markdown table from :attr:`Evaluation.table`."""
    text = format_table(table, digits)
    lines = ["| " + " | ".join(text.columns) + " |", "|" + "---|" * len(text.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


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
    background: float = 0.0,
) -> Evaluation:
    """Attribute ``n`` seeded test images with each method and score the maps.

    Args:
        model: the trained classifier (logits); evaluated on its own device.
        dataset: usually the test split; ``n`` images are drawn with ``seed``.
        methods: names from :data:`xwp.METHODS`.
        initial_model: needed by XWP/XWPc unless ``model`` is an ``xwp.MLP``.
        batch_size: images attributed together.
        method_options: per-method overrides of the registry defaults.
        progress: called with ``(fraction done, message)``.
        n_examples: how many of the images keep their attribution maps.
        background: the value a removed feature takes (the protocol's 0; for sensitivity checks).

    Follows the protocol in :mod:`xwp.metrics`: the target is the true label.
    """
    if isinstance(methods, str):
        raise XWPError("methods must be a list of names, e.g. ['xwp', 'ig'], not one text")
    methods = list(dict.fromkeys(methods))  # a method named twice is evaluated once
    check_request(dataset, methods, n)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise XWPError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    sample = dataset.sample(n, seed)
    device, dtype = model_device(model), model_dtype(model)
    model.eval()
    options = method_options or {}
    rows: list[pd.DataFrame] = []
    kept_curves: dict[str, dict[str, np.ndarray]] = {"deletion": {}, "insertion": {}}
    examples: dict[str, Any] = {
        "images": sample.images[:n_examples].numpy(),
        "labels": sample.labels[:n_examples].numpy(),
        "classes": sample.classes,
        "attributions": {},
    }
    batches = [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
    p_target, correct = [], []  # the same for every method
    with torch.no_grad():
        for start, stop in batches:
            probs = torch.softmax(model(sample.images[start:stop].to(device=device, dtype=dtype)), dim=1).cpu()
            p_target.append(probs.gather(1, sample.labels[start:stop, None])[:, 0])
            correct.append(probs.argmax(1) == sample.labels[start:stop])
    total = len(methods) * len(batches)
    done = 0
    for name in methods:
        method = make_method(name, model, initial_model, **options.get(name, {}))
        seconds = 0.0
        scores: dict[str, list[torch.Tensor]] = {m: [] for m in metrics.METRICS}  # per batch; curves for curve metrics
        for start, stop in batches:
            x = sample.images[start:stop].to(device=device, dtype=dtype)
            y = sample.labels[start:stop].to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            attr = method.attribute(x, target=y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            if start == 0:
                examples["attributions"][name] = attr[:n_examples].detach().cpu().numpy()
            for m, metric in metrics.METRICS.items():
                if metric.curve is not None:  # keep the curves; the score is read from them below
                    out = metrics.curves(model, x, y, attr, metric.curve, seed=seed, background=background)
                else:
                    out = metric.score(model, x, y, attr, seed=seed, background=background)
                scores[m].append(out.cpu())
            done += 1
            if progress is not None:
                progress(done / total, f"{METHODS[name].label}: {stop}/{n} images")
        per = pd.DataFrame(
            {
                "method": name,
                "image": np.arange(n),
                "label": sample.labels.numpy(),
                "p_target": torch.cat(p_target).double().numpy(),
                "correct": torch.cat(correct).numpy(),
            }
        )
        for m, metric in metrics.METRICS.items():
            values = torch.cat(scores[m])
            if metric.curve is not None:
                # kept as float32: 10,000 images x 12 methods x 2 kinds of curves stay under 200 MB
                kept_curves[metric.curve][name] = values.float().numpy()
                values = metric.from_curves(values)
            per[m] = values.double().numpy()
        per["seconds"] = seconds / n
        rows.append(per)
    per_image = pd.concat(rows, ignore_index=True)
    table = summarize(per_image)
    settings = {
        "n": n,
        "seed": seed,
        "dataset": dataset.name,
        "split": dataset.split,
        "batch_size": batch_size,
        "methods": list(methods),
        "device": str(device),
        "options": options,
        "background": background,
    }
    return Evaluation(table, per_image, kept_curves["deletion"], kept_curves["insertion"], examples, settings)


def check_request(dataset: ImageSet, methods: Sequence[str], n: int) -> None:
    """Refuse unknown methods and impossible image counts before any work starts."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise XWPError(f"n (the number of images) must be a whole number, got {str(n)[:40]!r}")
    if isinstance(methods, str):
        raise XWPError("methods must be a list of names, e.g. ['xwp', 'ig'], not one text")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise XWPError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not methods:
        raise XWPError("choose at least one method")
    if n > LIMITS.max_eval_images:
        raise XWPError(f"evaluation is limited to {LIMITS.max_eval_images} images (XWP_MAX_EVAL_IMAGES), got {n}")
    if not 1 <= n <= len(dataset):
        raise XWPError(
            f"n must be between 1 and {len(dataset)} (the size of the {dataset.name} {dataset.split} split), got {n}"
        )


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of each metric per method, plus seconds per image, in first-seen order."""
    order = list(dict.fromkeys(per_image["method"]))
    g = per_image.groupby("method", sort=False)
    table = pd.DataFrame(index=pd.Index(order, name="method"))
    table["label"] = [METHODS[m].label if m in METHODS else m for m in order]
    for m in metrics.METRICS:
        table[f"{m}_mean"] = g[m].mean()
        table[f"{m}_std"] = g[m].std(ddof=0)
    table["seconds_per_image"] = g["seconds"].first()
    table["n"] = g.size()
    return table

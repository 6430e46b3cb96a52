"""The issue-11 protocol in one call: every method x output space x removal, per image, then summarised.

:func:`score_methods` builds the long per-image table (one row per method, output,
removal and image); :func:`summary_table` turns it into the pinned CSV layout (one row per
(method, output, removal) with ``<metric>_mean``, ``_median``, ``_ci_low``, ``_ci_high``);
:func:`ranking_agreement` says whether the ranking of methods survives a change of removal.
:func:`xwp.evaluate` runs the same protocol on a dataset sample with timing, curves and progress;
this module works on any image tensor (see docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp import faithfulness as F
from xwp import stats
from xwp.attribution import METHODS, make_method
from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError
from xwp.metrics import PINNED
from xwp.removal import REMOVALS, make_removal

EXTRA = ("sparseness", "complexity")


def build_method(name: str, model: nn.Module, initial_model: nn.Module | None, output: str, options: dict[str, Any]):
    """The method explaining ``output`` when it has an ``output`` option (others are output-free, e.g. random)."""
    opts = dict(options)
    if "output" in METHODS[name].defaults:
        opts["output"] = output
    return make_method(name, model, initial_model, **opts)


def score_methods(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[str],
    outputs: Sequence[str] = ("softmax", "logits"),
    removals: Sequence[str] = ("zero",),
    initial_model: nn.Module | None = None,
    train_mean: torch.Tensor | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 64,
    steps: int = F.STEPS,
    seed: int = 0,
    sensitivity_samples: int = 10,
    sensitivity_radius: float = 0.2,
) -> pd.DataFrame:
    """Per-image scores: columns ``method, output, removal, image, label, correct`` and every metric.

    Each method explains each output space (methods without an ``output`` option are
    built once and scored in both); maps are computed once per (method, output) and
    scored under every removal. ``max_sensitivity`` re-runs the method
    ``sensitivity_samples`` times per image (0 skips it: NaN); it does not depend on the
    removal, so it is computed once per (method, output).
    """
    bad = [r for r in removals if r not in REMOVALS]
    if bad:
        raise XWPError(f"unknown removal(s) {', '.join(bad)}; choose from {', '.join(REMOVALS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise XWPError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    device, dtype = model_device(model), model_dtype(model)
    x_all, y_all = images.to(device=device, dtype=dtype), labels.to(device).long()
    with torch.no_grad():
        correct = (
            torch.cat([model(x_all[i : i + batch_size]).argmax(1) for i in range(0, len(x_all), batch_size)]).cpu()
            == y_all.cpu()
        )
    ops = {r: make_removal(r, model, initial_model, train_mean) for r in removals}
    options = method_options or {}
    frames = []
    for name in methods:
        for output in outputs:
            method = build_method(name, model, initial_model, output, options.get(name, {}))
            cols: dict[str, list[np.ndarray]] = {r: [] for r in removals}
            sens = []
            for start in range(0, len(x_all), batch_size):
                x, y = x_all[start : start + batch_size], y_all[start : start + batch_size]
                attr = method.attribute(x, target=y)
                for r, op in ops.items():
                    idx = torch.arange(start, start + len(x))
                    s = F.per_image_scores(model, x, y, attr, op, output, steps, seed, index=idx)
                    cols[r].append({k: v.double().cpu().numpy() for k, v in s.items() if not k.startswith("curve_")})
                if sensitivity_samples:
                    explain = lambda inp, t, m=method: m.attribute(inp, target=t)  # noqa: E731
                    ms = F.max_sensitivity(explain, x, y, sensitivity_radius, sensitivity_samples, seed, attr)
                    sens.append(ms.cpu().numpy())
            ms_all = np.concatenate(sens) if sens else np.full(len(x_all), np.nan)
            for r in removals:
                block = {k: np.concatenate([c[k] for c in cols[r]]) for k in cols[r][0]}
                frames.append(
                    pd.DataFrame(
                        {
                            "method": name,
                            "output": output,
                            "removal": r,
                            "image": np.arange(len(x_all)),
                            "label": y_all.cpu().numpy(),
                            "correct": correct.numpy(),
                            **block,
                            "max_sensitivity": ms_all,
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def summary_table(
    per_image: pd.DataFrame,
    metrics: Sequence[str] = PINNED + EXTRA,
    correct_only: bool = False,
    n_boot: int = stats.N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (method, output, removal): ``<metric>_mean/_median/_ci_low/_ci_high`` and ``n``.

    ``correct_only`` keeps the correctly classified images (the same filter for every row).
    """
    data = per_image[per_image["correct"]] if correct_only else per_image
    present = [m for m in metrics if m in data.columns]
    return stats.summarize(data, present, n_boot, seed, by=["method", "output", "removal"]).reset_index()


def significance(per_image: pd.DataFrame, metric: str, output: str, removal: str, alpha: float = stats.ALPHA):
    """Paired Holm-corrected Wilcoxon tests between methods for one metric, output space and removal."""
    sub = per_image[(per_image["output"] == output) & (per_image["removal"] == removal)]
    return stats.paired_tests(sub, metric, F.DIRECTIONS[metric], alpha)


def ranking_agreement(per_image: pd.DataFrame, metric: str, output: str) -> pd.DataFrame:
    """Spearman correlation of the methods' mean scores between every two removals (does the ranking survive?)."""
    sub = per_image[per_image["output"] == output]
    means = sub.groupby(["removal", "method"], sort=False)[metric].mean().unstack(0)
    return means.corr(method="spearman")

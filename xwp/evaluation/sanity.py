"""Sanity checks for attribution methods (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

- :func:`cascading_randomisation`: re-draw the trained layers' parameters from their
  initialiser, top layer first, one more layer at each step, and compare each method's maps
  with the maps of the intact model. The initial state is held fixed: XWP and XWPc compare
  the (now randomised) weights with the *same* initial weights, as they would for any
  model. The original model is never modified.
- :func:`label_randomisation`: train the same small network (same initial state) on true
  and on shuffled labels and compare the maps of the two.

Similarity is the Spearman rank correlation of signed maps per image, on all pixels
(``spearman_all``) and on the pixels where the input is non-zero (``spearman_nonzero``),
averaged over images. Compared as *absolute* maps on all pixels (as Quantus does), every
zero-baseline method looks "similar" after randomisation only because all of them give 0
where the pixel is 0; on signed maps the all-pixel column is far lower (measured: at most
0.13 for XWP, XWPc, Occlusion, IG and LRP after randomising only the top layer of a 3-epoch
typeface MLP), and the non-zero column is the one that tests the method. A row passes
when ``spearman_nonzero < threshold``
(default :data:`THRESHOLD` = 0.5: less than half the rank agreement of the intact maps
survives); a method that does not depend on the model (e.g. ``random``) fails.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from torch import nn

from xwp.attribution import make_method
from xwp.models import MLP

THRESHOLD = 0.5


def spearman_rows(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """Spearman correlation per row of ``a`` and ``b`` ``(B, ...)`` over the entries in ``mask``; NaN if constant."""
    a2 = a.reshape(a.shape[0], -1).double().cpu().numpy()
    b2 = b.reshape(b.shape[0], -1).double().cpu().numpy()
    m2 = np.ones_like(a2, dtype=bool) if mask is None else mask.reshape(a.shape[0], -1).cpu().numpy()
    out = np.full(a2.shape[0], np.nan)
    for i in range(a2.shape[0]):
        u, v = a2[i, m2[i]], b2[i, m2[i]]
        if u.size > 2 and np.ptp(u) > 0 and np.ptp(v) > 0:
            out[i] = sps.spearmanr(u, v).statistic
    return out


def parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers with parameters that can be re-drawn (Linear, Conv), input to output."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]


def redraw(layer: nn.Module, seed: int, init: str = "torch") -> None:
    """Re-initialise one layer in place from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if init == "kaiming":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        else:
            layer.reset_parameters()


def randomised_models(model: nn.Module, seed: int = 0):
    """Yield ``(layer name, depth, copy)``: copies with the top 1, 2, ... layers re-drawn (cascading)."""
    layers = parameter_layers(model)
    current = copy.deepcopy(model).eval()
    init = getattr(model, "init", "torch")
    for depth, (name, _) in enumerate(reversed(layers), start=1):
        redraw(current.get_submodule(name), seed + 1000 + depth, init)
        yield name, depth, copy.deepcopy(current)


def _maps(name: str, model: nn.Module, initial_model, inputs, target, options) -> torch.Tensor:
    """One method's maps for ``inputs``."""
    return make_method(name, model, initial_model, **options.get(name, {})).attribute(inputs, target=target)


def _row(method: str, layer: str, depth: int, a: torch.Tensor, b: torch.Tensor, fg: torch.Tensor, threshold: float):
    """One result row comparing maps ``a`` (intact) and ``b``."""
    s_all, s_nz = spearman_rows(a, b), spearman_rows(a, b, fg)
    nonzero = float(np.nanmean(s_nz)) if np.any(~np.isnan(s_nz)) else float("nan")
    return {
        "method": method,
        "layer": layer,
        "depth": depth,
        "spearman_all": float(np.nanmean(s_all)) if np.any(~np.isnan(s_all)) else float("nan"),
        "spearman_nonzero": nonzero,
        "passed": bool(nonzero < threshold),
        "n": int(a.shape[0]),
    }


def cascading_randomisation(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    methods: Sequence[str],
    initial_model: nn.Module | None = None,
    seed: int = 0,
    method_options: dict[str, dict[str, Any]] | None = None,
    threshold: float = THRESHOLD,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) with the initial state fixed.

    One row per (method, randomised layer): ``layer`` is the lowest layer re-drawn so far
    (``depth`` layers from the top), ``spearman_all`` / ``spearman_nonzero`` the mean over
    images of the Spearman correlation with the intact model's maps, ``passed`` as in the
    module docstring. For an ``xwp.MLP`` the initial state travels in the copies' buffers;
    for other networks pass ``initial_model``, used unchanged for every copy.
    """
    options = method_options or {}
    target = torch.as_tensor(target).long()
    fg = (inputs != 0).reshape(inputs.shape[0], -1)
    original = {m: _maps(m, model, initial_model, inputs, target, options) for m in methods}
    rows = []
    for layer, depth, randomised in randomised_models(model, seed):
        for m in methods:
            maps = _maps(m, randomised, initial_model, inputs, target, options)
            rows.append(_row(m, layer, depth, original[m], maps, fg, threshold))
    return pd.DataFrame(rows)


def fit_small(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int, lr: float = 1e-3
) -> nn.Module:
    """Train ``model`` in place with Adam and cross-entropy, batches of 64 in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(images.shape[0], generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
            opt.step()
    return model.eval()


def label_randomisation(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[str],
    hidden: Sequence[int] = (64,),
    epochs: int = 5,
    seed: int = 0,
    threshold: float = THRESHOLD,
    lr: float = 1e-3,
) -> pd.DataFrame:
    """Label randomisation (Adebayo et al. 2018) on a small MLP trained briefly on true and on shuffled labels.

    Both networks start from the same initial state (seed ``seed``); maps of ``images`` for
    ``labels`` are compared as in :func:`cascading_randomisation`. Columns: ``method``,
    ``layer`` (``"labels"``), ``spearman_all``, ``spearman_nonzero``, ``passed``,
    ``accuracy_true`` and ``accuracy_shuffled`` (on ``images``).
    """
    n_classes = int(max(train_labels.max(), labels.max())) + 1
    sizes = (train_images[0].numel(), *hidden, n_classes)
    dtype = train_images.dtype
    true_model = fit_small(MLP(sizes, seed=seed).to(dtype), train_images, train_labels, epochs, seed, lr)
    g = torch.Generator().manual_seed(seed + 1)
    shuffled = train_labels[torch.randperm(train_labels.shape[0], generator=g)]
    shuffled_model = fit_small(MLP(sizes, seed=seed).to(dtype), train_images, shuffled, epochs, seed, lr)
    fg = (images != 0).reshape(images.shape[0], -1)
    with torch.no_grad():
        acc = [float((m(images).argmax(1) == labels).double().mean()) for m in (true_model, shuffled_model)]
    rows = []
    for m in methods:
        a = _maps(m, true_model, None, images, labels, {})
        b = _maps(m, shuffled_model, None, images, labels, {})
        row = _row(m, "labels", 0, a, b, fg, threshold)
        row.update(accuracy_true=acc[0], accuracy_shuffled=acc[1])
        rows.append(row)
    return pd.DataFrame(rows)

"""What the initial state adds to XWP: XWP computed from four different "initial" first layers.

XWP scores pixel i by ``sum_n I_n (f_n(x) - f_n^{W_i = W0_i}(x))`` (Lympelopoulos &
Kanellopoulou 2026, eq. 3): the swap changes the first pre-activation by
``x_i (W0_i - W_i)``, i.e. it removes the pixel's trained contribution ``x_i W_i`` and adds a
projection ``x_i W0_i`` through the initial weights. Variants of ``W0``:

- ``true``: the network's real initial state;
- ``zeros``: ``W0 = 0``; the swap then removes the pixel, and with softmax output
  ``sum_n I_n p_n = 2 p_t - 1``, so ``XWP(zeros) = 2 x Occlusion(1x1, baseline 0)`` on the
  target probability, exactly (tested in float64);
- ``fresh``: a new draw of the same initialiser (another seed);
- ``permuted``: the true initial weights with their entries randomly permuted (same values,
  no relation to the training run).

:func:`rank_agreement` gives the median over images of the Spearman correlation between
variants (and 1x1 Occlusion) on the foreground (non-zero) pixels; Occlusion here is
:func:`occlusion_1x1`, exact in float64 (Captum 0.9's Occlusion divides its sums by the
window counts after ``.float()``, so its maps carry float32 rounding, ~1e-8 relative); :func:`ablation_scores`
scores every variant with :mod:`xwp.faithfulness` for the metrics tables.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp.attribution import XWP, split_first_linear
from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError
from xwp.faithfulness import masked_scores, output_score, per_image_scores
from xwp.models import MLP
from xwp.removal import Removal, Zero, initial_first_weight
from xwp.sanity import spearman_rows

VARIANTS = ("true", "zeros", "fresh", "permuted")


def variant_weight(
    model: nn.Module, variant: str, seed: int = 0, initial_model: nn.Module | None = None
) -> torch.Tensor:
    """The first-layer "initial" weights ``(H, D)`` of one variant (see the module docstring)."""
    w0 = initial_first_weight(model, initial_model)
    if variant == "true":
        return w0.clone()
    if variant == "zeros":
        return torch.zeros_like(w0)
    if variant == "permuted":
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(w0.numel(), generator=g).to(w0.device)
        return w0.reshape(-1)[perm].reshape(w0.shape).clone()
    if variant == "fresh":
        layer = copy.deepcopy(split_first_linear(model)[0])
        init = getattr(model, "init", "torch")
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(10_000 + seed + getattr(model, "seed", 0))
            if init == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                layer.reset_parameters()
        return layer.weight.detach().clone()
    raise XWPError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def variant_initial_model(
    model: nn.Module, variant: str, seed: int = 0, initial_model: nn.Module | None = None
) -> nn.Module:
    """A copy of ``model`` whose first layer holds the variant's weights (pass it to XWP as ``initial_model``)."""
    other = copy.deepcopy(model).eval()
    with torch.no_grad():
        split_first_linear(other)[0].weight.copy_(variant_weight(model, variant, seed, initial_model))
    return other


@torch.no_grad()
def occlusion_1x1(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, output: str = "softmax"
) -> torch.Tensor:
    """``f_t(x) - f_t(x with pixel i set to 0)`` for every pixel, in the model's dtype (Zeiler & Fergus 2014)."""
    x = inputs.to(device=model_device(model), dtype=model_dtype(model))
    t = torch.as_tensor(target, device=x.device).long().reshape(-1)
    b, d = x.shape[0], x[0].numel()
    keep = ~torch.eye(d, dtype=torch.bool, device=x.device).expand(b, d, d)  # (B, D masks, D)
    base = output_score(model(x), t, output)
    return (base[:, None] - masked_scores(model, x, t, keep, Zero(), output)).reshape(inputs.shape)


def ablation_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    initial_model: nn.Module | None = None,
    output: str = "softmax",
    occlusion: bool = True,
) -> dict[str, torch.Tensor]:
    """XWP maps per variant (keys ``xwp_<variant>``) and, if ``occlusion``, 1x1 zero Occlusion (key ``occlusion``)."""
    if initial_model is None and not isinstance(model, MLP):
        raise XWPError("the ablation needs the initial state: pass initial_model= or use xwp.MLP")
    maps = {}
    for v in variants:
        init = variant_initial_model(model, v, seed, initial_model)
        maps[f"xwp_{v}"] = XWP(model, init, output=output).attribute(inputs, target=target)
    if occlusion:
        maps["occlusion"] = occlusion_1x1(model, inputs, target, output)
    return maps


def rank_agreement(maps: dict[str, torch.Tensor], inputs: torch.Tensor) -> pd.DataFrame:
    """Per pair of maps (``a``, ``b``): median (and quartiles) over images of the foreground Spearman correlation."""
    fg = (inputs != 0).reshape(inputs.shape[0], -1)
    names = list(maps)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            s = spearman_rows(maps[a], maps[b], fg)
            ok = s[~np.isnan(s)]
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "median": float(np.median(ok)) if ok.size else float("nan"),
                    "q25": float(np.percentile(ok, 25)) if ok.size else float("nan"),
                    "q75": float(np.percentile(ok, 75)) if ok.size else float("nan"),
                    "n": int(ok.size),
                }
            )
    return pd.DataFrame(rows)


def ablation_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    maps: dict[str, torch.Tensor],
    removal: Removal | None = None,
    output: str = "softmax",
    seed: int = 0,
    **options: int,
) -> pd.DataFrame:
    """Per-image scores of every map (one row per map and image) from :func:`xwp.faithfulness.per_image_scores`.

    ``options`` (``steps``, ``n_runs``, ``subset_size``) go to ``per_image_scores``.
    """
    frames = []
    for name, attr in maps.items():
        s = per_image_scores(model, inputs, target, attr, removal, output, seed=seed, **options)
        cols = {k: v.detach().double().cpu().numpy() for k, v in s.items() if not k.startswith("curve_")}
        frames.append(pd.DataFrame({"method": name, "image": np.arange(inputs.shape[0]), **cols}))
    return pd.concat(frames, ignore_index=True)

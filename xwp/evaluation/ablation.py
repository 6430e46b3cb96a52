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
scores every variant with :mod:`xwp.evaluation.faithfulness` for the metrics tables.
:func:`initial_state_effect` splits one XWP map into its zero-state part and the effect of
the initial projection (the Explain page's "What the initial state adds").
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp.attribution import XWP, split_first_layer, split_first_linear
from xwp.attribution.common import resolve_target
from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError
from xwp.evaluation import scales
from xwp.evaluation.faithfulness import masked_scores, output_score, per_image_scores
from xwp.evaluation.removal import Removal, Zero, initial_first_weight
from xwp.evaluation.sanity import spearman_rows
from xwp.models import MLP

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
    """Per-image scores of every map, one row per map and image (see ``per_image_scores``).

    ``options`` (``steps``, ``n_runs``, ``subset_size``) go to ``per_image_scores``.
    """
    frames = []
    for name, attr in maps.items():
        s = per_image_scores(model, inputs, target, attr, removal, output, seed=seed, **options)
        cols = {k: v.detach().double().cpu().numpy() for k, v in s.items() if not k.startswith("curve_")}
        frames.append(pd.DataFrame({"method": name, "image": np.arange(inputs.shape[0]), **cols}))
    return pd.concat(frames, ignore_index=True)


#: the zero-state map's short name per score space (XWP with ``W0 = 0`` occludes the eq.-4 score:
#: ``2 p_t - 1`` on probability, the log-odds on log-odds, ``z_t - sum of the other logits`` on logits)
ZERO_STATE_LABEL = {"probability": "2 × Occlusion", "log-odds": "Occlusion", "logits": "Occlusion of z_t − Σz_other"}


@dataclass(frozen=True)
class InitialStateEffect:
    """One XWP map split in two: ``xwp = zero_state + difference`` (all shaped like the inputs, float64).

    ``zero_state``: XWP with the first layer's initial weights set to 0, which removes pixel i
    (``x_i W_i`` replaced by nothing), i.e. 1x1 zero Occlusion of the eq.-4 score: on
    probability exactly ``2 x Occlusion(p_t)``. ``difference``: what the true initial
    projection ``x_i W0_i`` changes. ``spearman``: per image, the Spearman correlation of
    ``xwp`` and ``zero_state`` over the non-zero pixels (NaN when undefined); ``pixels``: how
    many non-zero pixels.
    """

    xwp: torch.Tensor
    zero_state: torch.Tensor
    difference: torch.Tensor
    spearman: np.ndarray
    pixels: np.ndarray
    target: torch.Tensor
    space: str


def zero_initial_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose first layer (``nn.Linear`` or ``nn.Conv2d``) has all-zero weights."""
    other = copy.deepcopy(model).eval()
    with torch.no_grad():
        split_first_layer(other).layer.weight.zero_()
    return other


def initial_state_effect(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor | int | None = None,
    initial_model: nn.Module | None = None,
    space: str = "probability",
) -> InitialStateEffect:
    """XWP, XWP with a zero initial state (= zero Occlusion) and their difference, in float64.

    Lympelopoulos & Kanellopoulou (2026), eq. 3: swapping ``W_i`` for ``W0_i`` removes the
    pixel's trained contribution and adds ``x_i W0_i``; with ``W0 = 0`` only the removal
    is left (Zeiler & Fergus 2014 Occlusion, 1x1, baseline 0). For an ``xwp.MLP`` or
    ``xwp.CNN`` (or any network with a Linear/Conv2d first layer given ``initial_model``);
    ``space`` as in :mod:`xwp.evaluation.scales`; ``target`` None: the predicted class. The model is
    not modified (float64 copies are used).
    """
    space = scales.check_space(space)
    m64 = copy.deepcopy(model).double().eval()
    init64 = None if initial_model is None else copy.deepcopy(initial_model).double().eval()
    x = inputs.detach().to(device=model_device(m64), dtype=torch.float64)
    with torch.no_grad():
        t = resolve_target(target, m64(x))
    output = scales.output_for(space, "xwp")
    full = XWP(m64, init64, output=output).attribute(x, target=t)
    zero = XWP(m64, zero_initial_model(m64), output=output).attribute(x, target=t)
    fg = (x != 0).reshape(x.shape[0], -1)
    return InitialStateEffect(
        xwp=full,
        zero_state=zero,
        difference=full - zero,
        spearman=spearman_rows(full, zero, fg),
        pixels=fg.sum(1).cpu().numpy(),
        target=t,
        space=space,
    )

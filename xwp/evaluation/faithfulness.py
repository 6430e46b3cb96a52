"""Per-image faithfulness, robustness and complexity scores, batched in torch (CPU or GPU).

Every score is per image (a ``(B,)`` tensor) so that :mod:`xwp.evaluation.stats` can put intervals and
paired tests on it; any removal operator from :mod:`xwp.evaluation.removal` can be used (default: zero,
the paper's), and every output-based score exists in three output spaces: ``"softmax"`` (the
explained class's probability), ``"logits"`` (its logit) and ``"log-odds"`` (its log-odds
``log p - log(1 - p)``, :func:`xwp.evaluation.scales.log_odds`, exact when ``p`` rounds to 1); the first
two are the default of :func:`xwp.evaluate` (:data:`DEFAULT_OUTPUTS`).

Curves (``curves``): point k scores the image with the first ``floor(D k / steps)`` features
removed (``kind="deletion"``: start intact) or kept (``kind="insertion"``: start with
everything removed), features taken most relevant first (``order="morf"``) or least relevant
first (``"lerf"``); ties in a random order seeded per image (:func:`feature_order`). The
curve is the raw score, NOT divided by its value on the intact image, so a misclassified
image cannot blow up a mean; ``relative=True`` divides by it and clips to ``[0, clip]``
(softmax only). AUC: trapezoid rule on [0, 1].

Directions (``DIRECTIONS``, True = higher is better):

- ``deletion_auc`` (MoRF deletion; Petsiuk et al. 2018) lower; ``insertion_auc`` higher;
- ``srg``: symmetric relevance gain = AUC(LeRF deletion) - AUC(MoRF deletion), higher
  (Blücher, Vielhaben & Strodthoff, "Decoupling Pixel Flipping and Occlusion Strategy for
  Consistent XAI Benchmarks", TMLR 2024);
- ``average_drop``: top ``fraction`` removed; softmax: ``max(0, p - p') / p``
  (Chattopadhyay et al. 2018), logits and log-odds: ``max(0, s - s')`` (no scale to divide by); higher;
- ``faithfulness_correlation``: Pearson correlation, over ``n_runs`` random subsets of
  ``subset_size`` features (the same subsets for every image), between the subset's summed
  attribution and the output drop when the subset is removed (Bhatt, Weller & Moura, IJCAI 2020); higher;
- ``max_sensitivity``: ``max_delta ||Phi(x + delta) - Phi(x)|| / ||Phi(x)||`` over ``n_samples``
  uniform draws ``delta ~ U[-r, r]^D`` (Yeh et al., NeurIPS 2019); lower;
- ``sparseness``: Gini index of ``|Phi|`` (Chalasani et al., ICML 2020); higher;
- ``complexity``: entropy of ``|Phi| / sum |Phi|`` (Bhatt et al. 2020); lower.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from xwp.attribution.first_layer import FirstLayer, split_first_layer
from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError
from xwp.evaluation.removal import Removal, Zero
from xwp.evaluation.scales import log_odds

STEPS = 200
#: the curve shortcut is taken when at most this fraction of features differ from the removal's fill
#: value: with zero removal (22-48 % non-zero pixels) it made the curves 2.2-3.3x faster, with
#: mean removal (every pixel differs) 0.94-1.21x (docs/results/curves_ab_cpu.md)
SHORTCUT_DENSITY = 0.6
DROP_FRACTION = 0.2
OUTPUTS = ("softmax", "logits", "log-odds")
#: the output spaces :func:`xwp.evaluate` and the CLI use unless told otherwise
DEFAULT_OUTPUTS = ("softmax", "logits")
#: output space -> the score space of :mod:`xwp.evaluation.scales` that methods explain in it
SPACE = {"softmax": "probability", "logits": "logits", "log-odds": "log-odds"}
#: metric name -> higher is better
DIRECTIONS = {
    "deletion_auc": False,
    "insertion_auc": True,
    "srg": True,
    "average_drop": True,
    "faithfulness_correlation": True,
    "max_sensitivity": False,
    "sparseness": True,
    "complexity": False,
}
Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def image_seed(seed: int, index: int) -> int:
    """A 63-bit seed for one image from ``(seed, image index)`` (NumPy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def feature_order(attributions: torch.Tensor, seed: int = 0, index=None) -> torch.Tensor:
    """Feature indices ``(B, D)`` by descending attribution; ties in a random order seeded per image.

    Image b's tie-breaking order depends only on ``(seed, index[b])`` (default ``index`` =
    ``0..B-1``: the image's position in the evaluated sample), so a score does not change with
    the batch size or the batch an image lands in. NaN attributions count as the least important.
    """
    b = attributions.shape[0]
    attr = attributions.reshape(b, -1).double().cpu()
    attr = torch.nan_to_num(attr, nan=-torch.inf)
    ids = range(b) if index is None else [int(i) for i in torch.as_tensor(index).reshape(-1)]
    if len(ids) != b:
        raise XWPError(f"index has {len(ids)} entries for {b} images")
    keys = torch.stack(
        [
            torch.rand(attr.shape[1], generator=torch.Generator().manual_seed(image_seed(seed, i)), dtype=torch.float64)
            for i in ids
        ]
    )
    perm = torch.argsort(keys, dim=1)  # (B, D): a random order per image
    idx = torch.sort(-attr.gather(1, perm), dim=1, stable=True).indices
    return perm.gather(1, idx).to(attributions.device)


def step_counts(n_features: int, steps: int = STEPS) -> torch.Tensor:
    """Features removed at each step: ``floor(D k / steps)`` for k = 0..steps."""
    return torch.div(torch.arange(steps + 1) * n_features, steps, rounding_mode="floor")


def output_score(logits: torch.Tensor, target: torch.Tensor, output: str = "softmax") -> torch.Tensor:
    """The explained class's softmax probability, logit or log-odds per row ``(N,)``."""
    if output == "softmax":
        return torch.softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    if output == "logits":
        return logits.gather(1, target[:, None])[:, 0]
    if output == "log-odds":
        return log_odds(logits).gather(1, target[:, None])[:, 0]
    raise XWPError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")


def _prepare(model: nn.Module, inputs: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs on the model's device and dtype, targets as a ``(B,)`` long tensor."""
    device, dtype = model_device(model), model_dtype(model)
    x = inputs.to(device=device, dtype=dtype)
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    return x, t


@torch.no_grad()
def masked_scores(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    keep: torch.Tensor,
    removal: Removal,
    output: str,
    rows: int = 4096,
) -> torch.Tensor:
    """Scores ``(B, K)`` of each image under ``K`` keep masks ``(B, K, D)``, ``rows`` forward rows at a time."""
    b, k, d = keep.shape
    out = torch.empty(b, k, dtype=x.dtype, device=x.device)
    per = max(1, rows // b)
    for start in range(0, k, per):
        stop = min(k, start + per)
        s = stop - start
        logits = removal.masked_logits(model, x, s, keep[:, start:stop].reshape(b * s, d))
        out[:, start:stop] = output_score(logits, target.repeat_interleave(s), output).reshape(b, s)
    return out


@torch.no_grad()
def intact_score(model: nn.Module, inputs: torch.Tensor, target, output: str = "softmax") -> torch.Tensor:
    """The score ``(B,)`` of the unmodified inputs."""
    x, t = _prepare(model, inputs, target)
    return output_score(model(x), t, output)


@torch.no_grad()
def curves(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    attributions: torch.Tensor,
    kind: str = "deletion",
    order: str = "morf",
    removal: Removal | None = None,
    output: str = "softmax",
    relative: bool = False,
    clip: float | None = 1.0,
    steps: int = STEPS,
    seed: int = 0,
    rows: int = 4096,
    index=None,
    shortcut: bool = True,
) -> torch.Tensor:
    """Deletion or insertion curves ``(B, steps + 1)`` of the explained class's score (see the module docstring).

    ``shortcut``: for a network whose first layer is ``nn.Linear`` and a removal whose fill
    value does not depend on the mask (zero, mean, blur), with at most :data:`SHORTCUT_DENSITY`
    of the features differing from it, compute the first pre-activation of every step from
    running sums of the features' rank-1 contributions (:func:`_linear_curves`) instead of
    running the whole network on every masked copy. Same curves to rounding
    (tests/test_faithfulness.py); ``False`` forces the masked copies.
    """
    if kind not in ("deletion", "insertion"):
        raise XWPError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if order not in ("morf", "lerf"):
        raise XWPError(f"order must be 'morf' or 'lerf', got {order!r}")
    if relative and output != "softmax":
        raise XWPError("relative curves are defined for softmax probabilities only")
    removal = removal or Zero()
    x, t = _prepare(model, inputs, target)
    b, d = x.shape[0], x[0].numel()
    ranked = feature_order(attributions, seed, index).to(x.device)  # (B, D), most relevant first
    if order == "lerf":
        ranked = ranked.flip(1)
    first = _linear_first(model) if shortcut else None
    base = removal.baseline(x) if first is not None else None
    if base is not None and (x.reshape(b, d) != base.reshape(b, d)).sum() <= SHORTCUT_DENSITY * b * d:
        curve = _linear_curves(first, x, t, ranked, base, kind == "deletion", output, steps, rows)
    else:
        rank = torch.empty_like(ranked)
        rank.scatter_(1, ranked, torch.arange(d, device=x.device).expand(b, d))  # position of each feature
        counts = step_counts(d, steps).to(x.device)  # (S,)
        untaken = rank[:, None, :] >= counts[None, :, None]  # (B, S, D): not yet taken at step k
        keep = untaken if kind == "deletion" else ~untaken
        curve = masked_scores(model, x, t, keep, removal, output, rows)
    if relative:
        curve = curve / output_score(model(x), t, output)[:, None]
        curve = curve.clamp(min=0.0, max=clip) if clip is not None else curve.clamp(min=0.0)
    return curve


def _linear_first(model: nn.Module) -> FirstLayer | None:
    """The model's first layer when it is ``nn.Linear`` (the curve shortcut's condition), else None."""
    try:
        first = split_first_layer(model)
    except XWPError:
        return None
    return None if first.is_conv else first


@torch.no_grad()
def _linear_curves(
    first: FirstLayer,
    x: torch.Tensor,
    target: torch.Tensor,
    ranked: torch.Tensor,
    base: torch.Tensor,
    deletion: bool,
    output: str,
    steps: int,
    rows: int,
) -> torch.Tensor:
    """Curves ``(B, steps + 1)`` through the first layer's linearity: the paper's rank-1 view of removal.

    Removing feature ``i`` (value ``x_i`` -> ``base_i``) changes the first pre-activation by
    ``(base_i - x_i) W_i``, so at every step ``h = W base + b + sum over kept i of (x_i - base_i) W_i``.
    Each feature's contribution is added once, into the row of the step where it enters
    (insertion) or leaves (deletion, rows in reverse step order), and a running sum over the
    rows gives every step's ``h``: ``(nnz + steps) H`` additions per image instead of a
    ``steps x D x H`` product, and features with ``x_i = base_i`` (zero pixels under zero
    removal) cost nothing. Layers 2..L then run on the ``steps + 1`` rows as before.
    """
    b, d = x.shape[0], x[0].numel()
    w = first.layer.weight.detach()  # (H, D)
    width, s1 = w.shape[0], steps + 1
    flat = x.reshape(b, d)
    base = base.to(device=x.device, dtype=x.dtype).reshape(b, d)
    h0 = base @ w.t()
    if first.bias() is not None:
        h0 += first.bias()
    counts = step_counts(d, steps).to(x.device)
    out = torch.empty(b, s1, dtype=x.dtype, device=x.device)
    per = max(1, (1 << 22) // (s1 * width))  # images whose (steps + 1, H) running sums are held at once
    for start in range(0, b, per):
        stop = min(b, start + per)
        order = ranked[start:stop]
        diff = (flat[start:stop] - base[start:stop]).gather(1, order)  # (n, D) in the order taken
        bi, j = torch.nonzero(diff, as_tuple=True)
        step = torch.searchsorted(counts, j, right=True)  # the step at which position j is taken
        if deletion:
            step = s1 - step  # row m is step `steps - m`: the features kept are those taken later
        h = torch.zeros((stop - start) * s1, width, dtype=x.dtype, device=x.device)
        h.index_add_(0, bi * s1 + step, w.t()[order[bi, j]] * diff[bi, j, None])
        h = h.view(stop - start, s1, width).cumsum_(1).add_(h0[start:stop, None])
        scores = _rest_scores(first, h.reshape(-1, width), target[start:stop].repeat_interleave(s1), output, rows)
        out[start:stop] = scores.view(stop - start, s1).flip(1) if deletion else scores.view(stop - start, s1)
    return out


def _rest_scores(first: FirstLayer, h: torch.Tensor, target: torch.Tensor, output: str, rows: int) -> torch.Tensor:
    """Scores ``(N,)`` of first pre-activations ``h`` ``(N, H)`` through the rest of the network, ``rows`` at a time."""
    out = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
    for start in range(0, h.shape[0], rows):
        stop = min(h.shape[0], start + rows)
        out[start:stop] = output_score(first.rest(h[start:stop]), target[start:stop], output)
    return out


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves ``(B, S)`` sampled evenly on [0, 1]."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def srg(morf_deletion: torch.Tensor, lerf_deletion: torch.Tensor) -> torch.Tensor:
    """Symmetric relevance gain ``AUC(LeRF) - AUC(MoRF)`` per image (Blücher et al., TMLR 2024)."""
    return auc(lerf_deletion) - auc(morf_deletion)


@torch.no_grad()
def average_drop(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    attributions: torch.Tensor,
    removal: Removal | None = None,
    output: str = "softmax",
    fraction: float = DROP_FRACTION,
    seed: int = 0,
    index=None,
) -> torch.Tensor:
    """Drop ``(B,)`` after removing the top ``floor(fraction D)`` features; relative (softmax) or absolute (others)."""
    removal = removal or Zero()
    x, t = _prepare(model, inputs, target)
    b, d = x.shape[0], x[0].numel()
    top = feature_order(attributions, seed, index).to(x.device)[:, : int(fraction * d)]
    keep = torch.ones(b, d, dtype=torch.bool, device=x.device).scatter_(1, top, False)
    s0 = output_score(model(x), t, output)
    s1 = masked_scores(model, x, t, keep[:, None], removal, output)[:, 0]
    drop = (s0 - s1).clamp(min=0)
    return drop / s0 if output == "softmax" else drop


def default_subset_size(d: int) -> int:
    """Quantus' 224 features of a 784-pixel image (28.6 %), scaled to ``d`` features."""
    return max(1, round(224 * d / 784))


def random_subsets(d: int, n_runs: int, subset_size: int, seed: int = 0) -> torch.Tensor:
    """Seeded random feature subsets ``(n_runs, subset_size)``, without replacement within a subset.

    The same subsets serve every image, so a score does not depend on how images are batched.
    """
    if not 1 <= subset_size < d:
        raise XWPError(f"subset_size must be between 1 and {d - 1}, got {subset_size}")
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_runs, d, generator=g).argsort(dim=1)[:, :subset_size]


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last axis; NaN where either side is constant."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    r = (a * b).sum(-1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan")))


@torch.no_grad()
def faithfulness_correlation(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    attributions: torch.Tensor,
    removal: Removal | None = None,
    output: str = "softmax",
    n_runs: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
    subsets: torch.Tensor | None = None,
    rows: int = 4096,
) -> torch.Tensor:
    """Faithfulness correlation ``(B,)`` (Bhatt et al. 2020): corr(sum of attributions of S, score drop removing S).

    ``subsets`` ``(B, R, k)`` or ``(R, k)`` fixes the subsets (for cross-checks); otherwise
    ``n_runs`` subsets of ``subset_size`` features (default :func:`default_subset_size`: 224 of
    784, Quantus' default) are drawn from ``seed``, the same for every image.
    """
    removal = removal or Zero()
    x, t = _prepare(model, inputs, target)
    b, d = x.shape[0], x[0].numel()
    if subsets is None:
        subsets = random_subsets(d, n_runs, subset_size or default_subset_size(d), seed)
    subsets = subsets.to(x.device)
    if subsets.dim() == 2:
        subsets = subsets.expand(b, *subsets.shape)
    r = subsets.shape[1]
    keep = torch.ones(b, r, d, dtype=torch.bool, device=x.device).scatter_(2, subsets, False)
    s0 = output_score(model(x), t, output)
    drops = s0[:, None] - masked_scores(model, x, t, keep, removal, output, rows)  # (B, R)
    attr = attributions.reshape(b, -1).to(device=x.device, dtype=torch.float64)
    sums = attr[:, None, :].expand(b, r, d).gather(2, subsets).sum(-1)  # (B, R)
    return pearson(sums, drops.double())


def max_sensitivity(
    explain: Explain,
    inputs: torch.Tensor,
    target,
    radius: float = 0.2,
    n_samples: int = 20,
    seed: int = 0,
    attributions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Max-sensitivity ``(B,)`` (Yeh et al. 2019) of ``explain(inputs, target) -> maps`` under uniform noise.

    The relative form ``max ||Phi(x + delta) - Phi(x)|| / ||Phi(x)||`` (Frobenius norms),
    ``delta ~ U[-radius, radius]^D``;
    inputs are not clipped to their range. ``attributions`` reuses maps already computed
    for ``inputs``. An all-zero map gives ``inf`` (or NaN if it stays zero).
    """
    b = inputs.shape[0]
    t = torch.as_tensor(target, device=inputs.device).long().reshape(-1).expand(b)
    base = attributions if attributions is not None else explain(inputs, t)
    base = base.reshape(b, -1).double()
    g = torch.Generator().manual_seed(seed)
    worst = torch.zeros(b, dtype=torch.float64, device=base.device)
    for _ in range(n_samples):
        delta = (torch.rand(inputs.shape, generator=g, dtype=torch.float64) * 2 - 1) * radius
        moved = explain(inputs + delta.to(device=inputs.device, dtype=inputs.dtype), t)
        num = (moved.reshape(b, -1).double().to(base.device) - base).norm(dim=1)
        worst = torch.maximum(worst, num)
    return worst / base.norm(dim=1)


def sparseness(attributions: torch.Tensor) -> torch.Tensor:
    """Gini index ``(B,)`` of ``|attributions|`` (Chalasani et al. 2020): 0 uniform, near 1 sparse, 0 if blank."""
    a = attributions.reshape(attributions.shape[0], -1).abs().double().sort(dim=1).values
    d = a.shape[1]
    i = torch.arange(1, d + 1, dtype=a.dtype, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - d - 1) * a).sum(1) / (d * total)
    return torch.where(total > 0, gini, torch.zeros_like(gini))


def complexity(attributions: torch.Tensor) -> torch.Tensor:
    """Entropy ``(B,)`` of ``|a| / sum |a|`` in nats (Bhatt et al. 2020); NaN for a blank map."""
    a = attributions.reshape(attributions.shape[0], -1).abs().double()
    total = a.sum(1, keepdim=True)
    p = a / total
    ent = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(1)
    return torch.where(total[:, 0] > 0, ent, torch.full_like(ent, float("nan")))


@torch.no_grad()
def per_image_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    attributions: torch.Tensor,
    removal: Removal | None = None,
    output: str = "softmax",
    steps: int = STEPS,
    seed: int = 0,
    n_runs: int = 100,
    subset_size: int | None = None,
    index=None,
    relative: bool = False,
) -> dict[str, torch.Tensor]:
    """Every model-based score of one batch in one call (the curves are computed once and reused).

    Returns ``(B,)`` tensors keyed like :data:`DIRECTIONS` (except ``max_sensitivity``, which
    needs the method itself) plus the three curves under ``curve_deletion``,
    ``curve_deletion_lerf`` and ``curve_insertion``. ``index``: the images' positions in the
    sample (tie-breaking seeds); ``relative``: curves divided by the intact score and clipped
    (softmax only).
    """
    common = dict(removal=removal, output=output, steps=steps, seed=seed, index=index, relative=relative)
    morf = curves(model, inputs, target, attributions, "deletion", "morf", **common)
    lerf = curves(model, inputs, target, attributions, "deletion", "lerf", **common)
    ins = curves(model, inputs, target, attributions, "insertion", "morf", **common)
    return {
        "deletion_auc": auc(morf),
        "insertion_auc": auc(ins),
        "srg": srg(morf, lerf),
        "average_drop": average_drop(model, inputs, target, attributions, removal, output, seed=seed, index=index),
        "faithfulness_correlation": faithfulness_correlation(
            model, inputs, target, attributions, removal, output, n_runs, subset_size, seed
        ),
        "sparseness": sparseness(attributions),
        "complexity": complexity(attributions),
        "curve_deletion": morf,
        "curve_deletion_lerf": lerf,
        "curve_insertion": ins,
    }

"""Faithfulness metrics: deletion and insertion curves and their AUC, Average Drop.

The protocol (pinned; every number in this project follows it):

- features are ordered by descending attribution, ties broken by a seeded random
  order (NaN attributions count as the least important);
- removing a feature sets it to the background value 0;
- the target is the true label, and every method explains that class;
- the score is the softmax probability of the target divided by its value on the
  intact input;
- ``deletion_auc``: 200 steps, step k removes floor(D k / 200) features (D = 784 for
  MNIST-like images), trapezoid rule on [0, 1]; lower is better (Petsiuk et al. 2018);
- ``insertion_auc``: the reverse, starting from the all-background image and adding
  features in the same order; higher is better;
- ``average_drop``: remove the top 20% (floor(0.2 D) = 156 features); mean over images
  of max(0, p - p') / p; higher is better (Chattopadhyay et al. 2018, as removal).

Curves are batched: the masked inputs of all images and a chunk of steps go through
the model in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xwp.devices import model_device, model_dtype, run_chunked

STEPS = 200
DROP_FRACTION = 0.2


def feature_order(attributions: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Feature indices ``(B, D)`` by descending attribution; ties in a seeded random order."""
    attr = attributions.reshape(attributions.shape[0], -1).double().cpu()
    attr = torch.nan_to_num(attr, nan=-torch.inf)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.argsort(torch.rand(attr.shape, generator=gen, dtype=torch.float64), dim=1)  # (B, D)
    idx = torch.sort(-attr.gather(1, perm), dim=1, stable=True).indices
    return perm.gather(1, idx).to(attributions.device)


def step_counts(n_features: int, steps: int = STEPS) -> torch.Tensor:
    """Features removed at each step: ``floor(D k / steps)`` for k = 0..steps."""
    return torch.div(torch.arange(steps + 1) * n_features, steps, rounding_mode="floor")


@torch.no_grad()
def target_probability(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax probability of ``target`` for each input ``(B,)``."""
    return torch.softmax(model(inputs), dim=1).gather(1, target[:, None])[:, 0]


@torch.no_grad()
def curves(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    attributions: torch.Tensor,
    mode: str = "deletion",
    steps: int = STEPS,
    seed: int = 0,
    rows: int = 4096,
    background: float = 0.0,
) -> torch.Tensor:
    """Deletion or insertion curves ``(B, steps + 1)`` of normalised target probabilities.

    Point k is the target probability with the first ``floor(D k / steps)`` features
    (in :func:`feature_order`) removed (deletion) or kept (insertion), divided by the
    probability on the intact input. A removed feature takes the value ``background``
    (the protocol's 0; other values are for sensitivity checks only).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    device, dtype = model_device(model), model_dtype(model)
    x = inputs.to(device=device, dtype=dtype).reshape(inputs.shape[0], -1)  # (B, D)
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    order = feature_order(attributions, seed).to(device)  # (B, D)
    counts = step_counts(x.shape[1], steps).to(device)  # (S,)
    p0 = target_probability(model, x, t)  # (B,)
    b, d = x.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d, device=x.device).expand(b, d))  # (B, D): position of each feature
    out = torch.empty(b, len(counts), dtype=x.dtype, device=x.device)
    per = max(1, rows // b)

    def work(start: int, stop: int) -> None:
        c = counts[start:stop]  # (s,)
        keep = rank[:, None, :] >= c[None, :, None] if mode == "deletion" else rank[:, None, :] < c[None, :, None]
        xs = torch.where(keep, x[:, None, :], background).reshape((-1,) + tuple(inputs.shape[1:]))  # (B*s, ...)
        out[:, start:stop] = target_probability(model, xs, t.repeat_interleave(stop - start)).reshape(b, -1)

    run_chunked(len(counts), per, work)
    return out / p0[:, None]


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves ``(B, S)`` sampled evenly on [0, 1]."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def deletion_auc(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    attributions: torch.Tensor,
    steps: int = STEPS,
    seed: int = 0,
) -> torch.Tensor:
    """Deletion AUC per image ``(B,)``; lower is better."""
    return auc(curves(model, inputs, target, attributions, "deletion", steps, seed))


def insertion_auc(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    attributions: torch.Tensor,
    steps: int = STEPS,
    seed: int = 0,
) -> torch.Tensor:
    """Insertion AUC per image ``(B,)``; higher is better."""
    return auc(curves(model, inputs, target, attributions, "insertion", steps, seed))


@torch.no_grad()
def average_drop(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    attributions: torch.Tensor,
    fraction: float = DROP_FRACTION,
    seed: int = 0,
    background: float = 0.0,
) -> torch.Tensor:
    """Per-image ``max(0, p - p') / p`` after removing the top ``floor(fraction D)`` features ``(B,)``.

    Average over images for the metric; higher is better. Removed features take the value
    ``background`` (0 in the protocol).
    """
    device, dtype = model_device(model), model_dtype(model)
    x = inputs.to(device=device, dtype=dtype)
    flat = x.reshape(x.shape[0], -1)
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    k = int(fraction * flat.shape[1])
    top = feature_order(attributions, seed).to(device)[:, :k]
    removed = flat.clone().scatter_(1, top, background).reshape(x.shape)
    p = target_probability(model, x, t)
    p_removed = target_probability(model, removed, t)
    return (p - p_removed).clamp(min=0) / p


def auc_from_curves(curve: torch.Tensor) -> torch.Tensor:
    """Per-image AUC ``(B,)`` of curves ``(B, S)``, computed in float64 (as :func:`xwp.evaluate` reports it)."""
    return auc(curve.double())


@dataclass(frozen=True)
class Metric:
    """A faithfulness metric: its computation and its direction (Quantus-style, without the constructors).

    ``compute(model, inputs, target, attributions, seed=, background=)`` gives one score per
    image ``(B,)``. A curve metric (``curve`` is ``"deletion"`` or ``"insertion"``) is the AUC
    of that :func:`curves` mode; :func:`xwp.evaluate` keeps its curves and calls
    :meth:`from_curves`. ``short`` is the table-column abbreviation; ``in_paper_table``
    marks the columns of the paper's Table 1 (Average Drop, Deletion AUC).
    """

    name: str
    label: str
    higher_is_better: bool
    description: str
    compute: Callable[..., torch.Tensor]
    short: str = ""
    curve: str | None = None
    in_paper_table: bool = False

    @property
    def arrow(self) -> str:
        """↑ or ↓."""
        return "↑" if self.higher_is_better else "↓"

    def score(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        attributions: torch.Tensor,
        seed: int = 0,
        background: float = 0.0,
    ) -> torch.Tensor:
        """Per-image scores ``(B,)`` of ``attributions`` for ``model`` on ``inputs`` and ``target``."""
        if self.curve is not None:
            return self.from_curves(
                curves(model, inputs, target, attributions, self.curve, seed=seed, background=background)
            )
        return self.compute(model, inputs, target, attributions, seed=seed, background=background)

    def from_curves(self, curve: torch.Tensor) -> torch.Tensor:
        """Per-image scores ``(B,)`` of a curve metric from its curves ``(B, S)``."""
        if self.curve is None:
            raise ValueError(f"{self.name} is not a curve metric")
        return self.compute(curve)

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b`` in this metric's direction."""
        return a > b if self.higher_is_better else a < b


#: the pinned metrics, in table order
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "average_drop",
            "Average Drop @20%",
            True,
            "mean relative drop of the target probability after removing the top 20% of features",
            average_drop,
            short="AD",
            in_paper_table=True,
        ),
        Metric(
            "deletion_auc",
            "Deletion AUC",
            False,
            "area under the target-probability curve while removing features, most important first",
            auc_from_curves,
            short="Del. AUC",
            curve="deletion",
            in_paper_table=True,
        ),
        Metric(
            "insertion_auc",
            "Insertion AUC",
            True,
            "area under the target-probability curve while adding features to a blank image",
            auc_from_curves,
            short="Ins. AUC",
            curve="insertion",
        ),
    )
}

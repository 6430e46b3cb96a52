"""First-layer weight patterns of an MLP as 28x28 images (the paper's Figure 2), with unit statistics.

Each first-layer unit ``j`` of an MLP on 28x28 inputs has 784 weights ``W[j]``: drawn as an
image they show which pixels excite or inhibit it. The patterns can be the trained weights,
the initial ones or their change, sorted by norm or by how strongly a unit drives a class
(:func:`class_drive`), and weighted by each unit's activation on one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from xwp.errors import XWPError
from xwp.models import MLP
from xwp.viz import plots

VIEWS = ("trained", "initial", "change")
SORTS = ("index", "norm", "drive")
LABELS = {"trained": "trained weights", "initial": "initial weights", "change": "trained − initial"}


@dataclass
class WeightPatterns:
    """First-layer patterns ready to draw, in display order."""

    patterns: np.ndarray  # (H, 784)
    order: list[int]  # neuron indices, first shown first
    scores: np.ndarray | None  # (H,) the sort key where there is one
    label: str  # what the patterns are
    drive: np.ndarray  # (C, H) class drive of each unit
    activation: np.ndarray | None  # (H,) unit activations on the chosen image
    figures: dict[Any, Any] = field(default_factory=dict)  # PNGs already drawn from these patterns


def first_layer(model: MLP, initial_model: MLP | None, view: str) -> np.ndarray:
    """First-layer weights ``(H, 784)``: ``trained``, ``initial`` or ``change`` (trained minus initial)."""
    w = model.linears[0].weight.detach().double().numpy()
    if view == "trained":
        return w
    if initial_model is None:
        raise XWPError("this model has no initial state, so only the trained weights can be shown")
    w0 = initial_model.linears[0].weight.detach().double().numpy()
    return w0 if view == "initial" else w - w0


def unit_outputs(model: MLP, h1: torch.Tensor) -> torch.Tensor:
    """First-layer outputs as the next layer sees them: ReLU of ``h1`` (logits if there is no hidden layer)."""
    return h1.relu() if len(model.linears) > 1 else h1


def class_drive(model: MLP, reference: torch.Tensor | None) -> np.ndarray:
    """``d logit_c / d a_j`` ``(C, H)`` at ``reference`` (all ReLUs open if None): how much unit j drives class c.

    ``a_j`` is the output of first-layer unit j. With one hidden layer this is the output
    weight ``W2[c, j]``; deeper, the later layers' ReLU gates are those of the reference input.
    """
    first = model.linears[0]
    if len(model.linears) == 1:
        return np.eye(first.out_features)
    if reference is None:
        drive = model.linears[-1].weight.detach()
        for layer in reversed(model.linears[1:-1]):
            drive = drive @ layer.weight.detach()
        return drive.double().numpy()
    with torch.no_grad():
        a0 = first(reference.reshape(1, -1).to(first.weight.dtype)).relu()  # (1, H)
    jac = torch.autograd.functional.jacobian(lambda a: model.net[2:](a)[0], a0)  # (C, 1, H)
    return jac[:, 0].detach().double().numpy()


def weight_patterns(
    model: MLP,
    initial_model: MLP | None = None,
    view: str = "trained",
    sort: str = "index",
    cls: int = 0,
    image: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> WeightPatterns:
    """The first-layer patterns of ``model`` in the requested order, optionally weighted by activation.

    ``view``: one of :data:`VIEWS`. ``sort``: ``index``, ``norm`` (largest L2 norm of the
    shown pattern first) or ``drive`` (largest :func:`class_drive` towards class ``cls``
    first, at ``reference``, e.g. the mean test image). ``image``: weight each pattern by
    its unit's activation on that input.
    """
    w = first_layer(model, initial_model, view)
    label = LABELS[view]
    activation = None
    if image is not None:
        first = model.linears[0]
        with torch.no_grad():
            h1 = first(image.reshape(1, -1).to(first.weight.dtype))  # (1, H), in the model's dtype
            activation = unit_outputs(model, h1)[0].double().numpy()  # (H,)
        w = w * activation[:, None]
        label += " × activation"
    drive = class_drive(model, reference)
    scores = None
    if sort == "norm":
        scores = np.linalg.norm(w, axis=1)
    elif sort == "drive":
        scores = drive[cls]
    order = list(range(len(w))) if scores is None else [int(i) for i in np.argsort(-scores, kind="stable")]
    return WeightPatterns(w, order, scores, label, drive, activation)


def grid_png(wp: WeightPatterns, count: int, sort: str, class_name: str) -> bytes:
    """The grid of the first ``count`` patterns in display order (the paper's Figure 2), as PNG (drawn once)."""
    if ("grid", count) not in wp.figures:
        shown = wp.order[:count]
        titles = [f"#{j}" if wp.scores is None else f"#{j} ({wp.scores[j]:+.2g})" for j in shown]
        order = {"index": "by index", "norm": "largest norm first"}.get(
            sort, f"strongest drivers of {class_name} first"
        )
        fig = plots.weights_grid(wp.patterns, shown, titles=titles, title=f"First layer, {wp.label}; {order}")
        wp.figures[("grid", count)] = plots.png_bytes(fig, dpi=plots.FIG_DPI)
    return wp.figures[("grid", count)]


def neuron_png(wp: WeightPatterns, j: int) -> bytes:
    """Unit ``j``'s pattern, large, as PNG (the latest one is kept: a wide layer has thousands of units)."""
    if wp.figures.get("unit", (None,))[0] != j:
        fig = plots.neuron_figure(wp.patterns[j], f"Unit #{j}: {wp.label}")
        wp.figures["unit"] = (j, plots.png_bytes(fig, dpi=plots.FIG_DPI))
    return wp.figures["unit"][1]


def neuron_stats(
    model: MLP, initial_model: MLP | None, wp: WeightPatterns, j: int, classes: Sequence[str]
) -> pd.DataFrame:
    """Numbers about first-layer unit ``j``: norm, range, change from initialisation, bias, drive."""
    w = model.linears[0].weight[j].detach().double().numpy()
    rows = [
        ("weight norm ‖Wⱼ‖", np.linalg.norm(w)),
        ("min weight", w.min()),
        ("max weight", w.max()),
        ("bias", float(model.linears[0].bias[j].detach())),
    ]
    if initial_model is not None:
        w0 = initial_model.linears[0].weight[j].detach().double().numpy()
        change = np.linalg.norm(w - w0)
        rows += [("change from init ‖Wⱼ − Wⱼ⁰‖", change), ("relative change", change / max(np.linalg.norm(w0), 1e-12))]
    if wp.activation is not None:
        rows.append(("activation on the image", wp.activation[j]))
    best = int(np.argmax(wp.drive[:, j]))
    rows += [(f"strongest drive: class {classes[best]}", wp.drive[best, j])]
    return pd.DataFrame({"quantity": [r[0] for r in rows], "value": [float(r[1]) for r in rows]})

"""One input explained by several methods: :class:`Explanation`, :func:`explain` and their exports.

The Explain page runs :func:`explain` after every canvas stroke, so it does little: predict,
attribute (in float64, on a copy of the model), colour each map into a small PNG tile. The
matplotlib figure with colour bars is only drawn for the download (:meth:`Explanation.download_png`).
"""

from __future__ import annotations

import copy
import hashlib
import html
import io
import math
import time
import weakref
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp.attribution import METHODS, make_method, methods_tagged
from xwp.data.datasets import ImageSet
from xwp.data.images import IMAGE_SHAPE, png
from xwp.errors import XWPError, safe_message
from xwp.evaluation import scales
from xwp.train import predict
from xwp.viz import plots

#: the methods the Explain page starts with: the registry's ``app-default`` tag
EXPLAIN_DEFAULT = tuple(methods_tagged("app-default"))
#: the look of :meth:`Explanation.probability_html` (one row per class: name, bar, percentage)
PROBABILITY_STYLE = """<style>
.xwp-p {display: grid; grid-template-columns: minmax(2.5rem, max-content) 1fr 2.8rem; gap: 0.4rem;
        align-items: center; font-size: 0.85rem; line-height: 1.15rem;}
.xwp-c {text-align: right; white-space: nowrap; overflow: hidden;}
.xwp-t {height: 0.8rem; background: rgba(128, 128, 128, 0.12); border-radius: 2px;}
.xwp-t > span {display: block; height: 100%; border-radius: 0 2px 2px 0;}
.xwp-v {text-align: right; font-variant-numeric: tabular-nums;}
</style>"""
#: at most this many attributions are kept in a memo passed to :func:`explain`
MEMO_SIZE = 256


def method_problem(
    name: str, has_initial: bool, model: nn.Module | None = None, inputs: torch.Tensor | None = None
) -> str | None:
    """Why method ``name`` cannot explain a model (None if it can), in one line for the app.

    ``has_initial``: the model's initial state is known (XWP and XWPc need it). With ``model``
    (and optionally example ``inputs``) the method's own :meth:`~xwp.attribution.Method.problem`
    is asked too, e.g. Pathwise on a network without ReLU layers.
    """
    spec = METHODS[name]
    if spec.needs_initial and not has_initial:
        return (
            f"{spec.label} needs the network's initial weights, which this checkpoint does not have. "
            "Train a model on the Train page (xwp keeps the initial state) to use it."
        )
    return None if model is None else spec.cls.problem(model, inputs)


def method_problems(model: nn.Module, has_initial: bool, methods: Sequence[str] | None = None) -> dict[str, str]:
    """``{name: why it does not apply}`` for the registered ``methods`` (default all) that cannot explain ``model``."""
    names = list(METHODS) if methods is None else methods
    return {m: reason for m in names if (reason := method_problem(m, has_initial, model)) is not None}


_FLOAT64: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _float64(model: nn.Module | None) -> nn.Module | None:
    """A float64 copy of ``model``, made once per model object (so the shared default model gets one copy)."""
    if model is None:
        return None
    copy64 = _FLOAT64.get(model)
    if copy64 is None:
        copy64 = _FLOAT64[model] = copy.deepcopy(model).double().eval()
    return copy64


def attribution_method(name: str, model: nn.Module, initial_model: nn.Module | None = None, space: str = "probability"):
    """Method ``name`` for ``model``, run in float64 (the model itself is left as it is).

    A confident prediction has a softmax output within 1e-6 of 1, where float32 keeps only
    a few distinct values. XWP and XWPc difference ``1 - p`` and stay exact in float32, but
    the baselines that perturb softmax outputs (Occlusion, Shapley, ...) would show rounding
    noise. Float64 costs about a millisecond more per stroke. ``space``: the score explained
    (:data:`xwp.evaluation.scales.SPACES`; methods without an output option ignore it).
    """
    return make_method(name, _float64(model), _float64(initial_model), **scales.method_options(space, name))


def picture_shape(model: nn.Module) -> tuple[int, int]:
    """``(H, W)``: one input of ``model`` as the picture the app draws, read from ``model.input_shape``.

    A CNN's ``(1, H, W)``, or an MLP's ``(D,)`` with ``D`` a square; a model that says
    nothing is taken to read the datasets' layout (:data:`~xwp.data.images.IMAGE_SHAPE`).
    """
    shape = tuple(getattr(model, "input_shape", IMAGE_SHAPE))
    if len(shape) == 3 and shape[0] == 1:
        return int(shape[1]), int(shape[2])
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        return side, side
    raise XWPError(f"the app draws one-channel square images; this model reads inputs of shape {shape}")


def model_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` as one float32 image ``(1, 1, H, W)`` in the model's picture shape."""
    return x.detach().reshape(1, 1, *picture_shape(model)).float()


def _attribution(
    name: str,
    model: nn.Module,
    initial_model: nn.Module | None,
    x: torch.Tensor,
    target: int,
    memo: MutableMapping | None,
    memo_key: Any,
    space: str = "probability",
) -> tuple[np.ndarray, float]:
    """One method's map ``(H, W)`` and seconds, remembered in ``memo`` per (model, method, space, target, input)."""
    key = attribution_key(memo_key, name, target, x, space)
    if memo is None or key not in memo:
        method = attribution_method(name, model, initial_model, space)
        t0 = time.perf_counter()
        a = method.attribute(x.double(), target=target)
        value = (a.detach().reshape(picture_shape(model)).double().numpy(), time.perf_counter() - t0)
        if memo is None:
            return value
        remember(memo, key, value)
    return memo[key]


def attribution_key(memo_key: Any, name: str, target: int, x: torch.Tensor, space: str = "probability") -> tuple:
    """The memo key of method ``name``'s map of input ``x`` for class ``target`` in score ``space``.

    ``memo_key`` names the model.
    """
    x = x.detach().reshape(1, -1).float()
    digest = hashlib.blake2b(x.numpy().tobytes(), digest_size=12).hexdigest()
    return ("attr", memo_key, name, space, int(target), digest)


def remember(memo: MutableMapping, key: tuple, value: tuple[np.ndarray, float]) -> None:
    """Keep ``(map, seconds)`` under ``key``, dropping the oldest entry beyond :data:`MEMO_SIZE`.

    The app computes maps on the compute executor (:mod:`xwp.serve.compute`) and passes them to
    :func:`explain` this way, so the page shows exactly what a direct call would.
    """
    memo[key] = value
    if len(memo) > MEMO_SIZE:
        memo.pop(next(iter(memo)))


@dataclass
class Explanation:
    """What the Explain page shows for one input: probabilities and one heatmap tile per method.

    The tiles are coloured arrays encoded as PNG (a few milliseconds, so the page can follow
    every stroke); the matplotlib figure with colour bars is only drawn for the download.
    """

    image: np.ndarray  # (H, W) input
    probs: np.ndarray  # (C,)
    predicted: int
    target: int
    maps: dict[str, np.ndarray]  # method name -> (H, W)
    limits: dict[str, float]  # method name -> colour limit s (the map is drawn on [-s, s])
    seconds: dict[str, float]
    skipped: dict[str, str]  # method name -> why it was left out
    classes: list[str]
    shared_scale: bool = False
    overlay: bool = False
    space: str = "probability"  # the score the maps explain (xwp.evaluation.scales.SPACES)
    input_png: bytes = b""
    tiles: dict[str, bytes] = field(default_factory=dict)  # method name -> PNG

    @property
    def title(self) -> str:
        """E.g. ``Predicted 7 (98%) · explaining 7``."""
        c = self.classes
        return f"Predicted {c[self.predicted]} ({self.probs[self.predicted]:.0%}) · explaining {c[self.target]}"

    def download_png(self) -> bytes:
        """The input and every map as one matplotlib figure with colour bars (for the download)."""
        fig = plots.attribution_figure(
            self.image,
            {METHODS[m].label: a for m, a in self.maps.items()},
            shared_scale=self.shared_scale,
            overlay=self.overlay,
            title=self.title,
        )
        return plots.png_bytes(fig, dpi=120)

    def npy_bytes(self) -> bytes:
        """The maps as one ``.npy`` array ``(methods, H, W)`` in the order of :attr:`maps`."""
        buf = io.BytesIO()
        np.save(buf, np.stack(list(self.maps.values())) if self.maps else np.zeros((0, *self.image.shape)))
        return buf.getvalue()

    def csv_bytes(self) -> bytes:
        """The maps as CSV: one row per pixel (row, col, input value), one column per method."""
        rows, cols = np.divmod(np.arange(self.image.size), self.image.shape[1])
        frame = pd.DataFrame({"row": rows, "col": cols, "input": self.image.ravel()})
        for name, a in self.maps.items():
            frame[name] = a.ravel()
        return frame.to_csv(index=False, float_format="%.6g").encode()

    def probability_html(self, max_label: int = 24) -> str:
        """The predicted probabilities as an HTML bar list (the explained class in red), for ``st.html``.

        Plain HTML instead of a chart: a Vega-Lite chart cost the browser about 50 ms of CPU
        per stroke (docs/app.md, "What a stroke costs the browser"). Class names come from
        checkpoints: made one printable line by :func:`xwp.errors.safe_message` (cut to
        ``max_label`` characters on the bar, 200 in the row's tooltip with the probability)
        and escaped.
        """
        rows = []
        for i, (name, p) in enumerate(zip(self.classes, self.probs, strict=True)):
            p = float(np.clip(p, 0.0, 1.0))
            shown = safe_message(name, max_label)
            colour = "#c62828" if i == self.target else "#9e9e9e"
            tip = f"{safe_message(name, 200)}: {p:.3f}" + (" (explained)" if i == self.target else "")
            tip = html.escape(tip, quote=True)
            rows.append(
                f'<div class="xwp-p" title="{tip}"><span class="xwp-c">{html.escape(shown)}</span>'
                f'<span class="xwp-t"><span style="width:{100 * p:.1f}%;background:{colour}"></span></span>'
                f'<span class="xwp-v">{p:.0%}</span></div>'
            )
        return PROBABILITY_STYLE + f'<div role="list" aria-label="Predicted probabilities">{"".join(rows)}</div>'


def class_names(model: nn.Module, classes: Sequence[str] | None = None) -> list[str]:
    """``classes`` as strings if they fit the model's outputs, else ``0..C-1``."""
    n = model.n_classes
    if classes is not None and len(classes) == n:
        return [str(c) for c in classes]
    return [str(i) for i in range(n)]


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] = EXPLAIN_DEFAULT,
    *,
    initial_model: nn.Module | None = None,
    classes: Sequence[str] | None = None,
    shared_scale: bool = False,
    overlay: bool = False,
    scale: int = 7,
    memo: MutableMapping | None = None,
    memo_key: Any = None,
    space: str = "probability",
    probs: np.ndarray | None = None,
) -> Explanation:
    """Predict one image ``x`` (its picture shape read from the model), attribute it and colour the maps.

    Args:
        model, initial_model: the trained network and its initial state (None: XWP and
            XWPc are skipped with the reason in :attr:`Explanation.skipped`). Neither is
            modified; attribution runs on float64 copies.
        target: the class to explain (default: the predicted one).
        classes: class names (default ``0..C-1``).
        shared_scale, overlay: one colour limit for all maps; draw the maps over the input.
        scale: pixels per input pixel of the PNG tiles.
        memo, memo_key: a dict that keeps maps already computed (at most :data:`MEMO_SIZE`),
            keyed by ``memo_key`` (which names the model), method, target and input.
        space: the score the maps explain: ``"probability"`` (the paper's softmax),
            ``"log-odds"`` or ``"logits"`` (see :mod:`xwp.evaluation.scales`).
        probs: the softmax output ``(C,)`` for ``x`` if already computed (e.g. on the compute executor).
    """
    scales.check_space(space)
    x = model_input(x, model)
    if probs is None:
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0].double().numpy()
    predicted = int(probs.argmax())
    target = predicted if target is None else int(target)
    if not 0 <= target < len(probs):
        raise XWPError(f"the class to explain must be in 0..{len(probs) - 1}, got {target}")
    maps, seconds, skipped = {}, {}, {}
    for name in methods:
        problem = method_problem(name, initial_model is not None, model, x)
        if problem:
            skipped[name] = problem
            continue
        maps[name], seconds[name] = _attribution(name, model, initial_model, x, target, memo, memo_key, space)
    image = x.reshape(picture_shape(model)).numpy()
    shared = plots.symmetric_limit(*maps.values()) if shared_scale and maps else None
    shown = {name: plots.display_map(a, shared) for name, a in maps.items()}  # as the downloaded figure draws them
    limits = {name: s for name, (_, s) in shown.items()}
    names = class_names(model, classes)
    ex = Explanation(
        image, probs, predicted, target, maps, limits, seconds, skipped, names, shared_scale, overlay, space
    )
    ex.input_png = png((np.clip(image, 0, 1) * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1))
    ex.tiles = {name: png(plots.heatmap_rgb(a, s, image, overlay, scale=scale)) for name, (a, s) in shown.items()}
    return ex


def colorbar_png() -> bytes:
    """The colour legend strip shown under the heatmaps."""
    return png(plots.colorbar_rgb(280, 12))


def example_grid(
    model: nn.Module,
    data: ImageSet,
    initial_model: nn.Module | None = None,
    classes: Sequence[str] | None = None,
    n: int = 3,
) -> bytes | None:
    """PNG of XWP and XWPᶜ on ``n`` correctly classified test images of different classes (None if none is).

    Falls back to Integrated Gradients when the initial state is unknown. The Home page shows it.
    """
    has_initial = initial_model is not None
    methods = [m for m in ("xwp", "xwpc") if method_problem(m, has_initial) is None] or ["ig"]
    labels = data.labels[:256]
    correct = predict(model, data.images[:256]) == labels
    picks: list[int] = []
    for i in torch.nonzero(correct).flatten().tolist():
        if int(labels[i]) not in {int(labels[j]) for j in picks}:
            picks.append(i)
        if len(picks) == n:
            break
    if not picks:
        return None
    x = data.images[picks]
    target = labels[picks]
    maps = {
        METHODS[m].label: attribution_method(m, model, initial_model).attribute(x.double(), target=target).numpy()
        for m in methods
    }
    fig = plots.method_grid(x.numpy(), target.numpy(), class_names(model, classes), maps, size=1.6)
    return plots.png_bytes(fig, dpi=plots.FIG_DPI)

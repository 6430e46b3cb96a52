"""Pathwise explanation of ReLU networks (Lim, Jo, Lee & Choi, AISTATS 2024, PMLR 238:4645-4653).

Computed as the official code (github.com/Jo-won/PathwiseExplanation, commit eaf7221,
``lib/func.py: hidden_index_list_for_maximize_softmax`` and ``main.py``) computes it, following
section 1 of the project's related-methods specification (summarised in docs/related-methods.md):

* ReLU layers are visited from the top (nearest the output) down. At layer ``l`` with
  activations ``h``, ``J = dy/dh`` is taken through the upper network in which every layer
  already visited has its ReLU *replaced* by a mask ``u -> 1_S * u`` (no ReLU inside the path).
  Unit ``i`` scores ``s_i = softmax_over_classes(h_i J[:, i])[c]``; units are sorted by ``s``
  (stable, ties by index), the first ``width`` are kept, then only those with ``s_i > 1/C``,
  and if none is left the top one.
* ``A = x * (dy_P / dx)[c]`` for the fully masked network ``y_P`` (no bias term), so
  ``sum(A) = f_P,c(x) - b_P,c`` rather than ``f_c(x)``.

For an MLP the masked network is linear and ``A = x * (W_L S_{L-1} W_{L-1} ... S_1 W_1)[c]``;
that closed form runs with all C rows carried (about C forward passes, no autograd). Other
feed-forward ReLU networks (conv nets) use the autograd form: per visited layer one masked
forward of the upper network and C vector-Jacobian products, batched as ``B * C`` rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xwp.attribution.common import Target, as_model_input, resolve_target
from xwp.attribution.registry import Method, register
from xwp.attribution.unroll import AutoFlatten, check_layers, unroll
from xwp.errors import XWPError


def width_count(width: int | str | None, n: int) -> int:
    """Units kept before the threshold: all (None or -1), an int, or ``"p%"`` of ``n`` (at least 1)."""
    if width is None or width == -1:
        return n
    if isinstance(width, str):
        text = width.strip()
        try:
            if text.endswith("%"):
                return min(n, max(1, round(n * float(text[:-1]) / 100)))
            width = int(text)
        except ValueError:
            raise XWPError(f"width must be a whole number, 'p%' or None, got {width!r}") from None
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise XWPError(f"width must be a positive whole number, 'p%' or None, got {width!r}")
    return min(n, width)


def select_units(
    scores: torch.Tensor, width: int | str | None, threshold: float, active: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep mask ``(B, n)``: the top ``width`` scores (stable order), then ``> threshold``, else the top one.

    ``active`` (bool ``(B, n)``), when given, ranks inactive units last and never lets them pass
    the threshold (the paper's "activated path"; the official code has no such option).
    """
    if active is not None:
        scores = scores.masked_fill(~active, -torch.inf)
    k = width_count(width, scores.shape[1])
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    vals, idx = vals[:, :k], idx[:, :k]
    ok = vals > threshold
    ok[:, 0] |= ~ok.any(1)  # fallback of the official code: keep the top unit
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, ok)


@register(
    "pathwise",
    "Pathwise",
    "propagation",
    "Input x gradient of the sub-network of units chosen top-down by softmax contribution > 1/C.",
    "Lim, Jo, Lee & Choi, AISTATS 2024 (as the official code computes it)",
    rank=120,
    tags=("study",),
)
class Pathwise(Method):
    """Pathwise explanation (Lim et al., AISTATS 2024), exactly as the official code computes it.

    Args:
        model: a feed-forward ReLU network (xwp.MLP, an nn.Sequential, or any model whose
            leaf layers run in order); it is never modified.
        width: units kept per layer before the ``1/C`` threshold: None (all), an int, or "p%".
        depth: paths are built on the last ``depth`` ReLU layers (None: all); lower layers keep
            their ReLU gates.
        threshold: ``"1/C"`` (the code's), a number, or None (no threshold: keep the top ``width``).
        active_only: never keep inactive units (the code can, through its top-1 fallback).
        image_chunk: images per batch of work (the autograd form holds ``C`` copies of each).

    Every option may also be given to ``attribute`` for one call.
    """

    defaults = {"width": None, "depth": None, "threshold": "1/C", "active_only": False, "image_chunk": 64}

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        o = self.options
        width_count(o["width"], 1)  # validate early
        depth, threshold = o["depth"], o["threshold"]
        if depth is not None and depth != -1 and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise XWPError(f"depth must be a positive whole number or None, got {depth!r}")
        if isinstance(threshold, str) and threshold != "1/C":
            raise XWPError(f"threshold must be '1/C', a number or None, got {threshold!r}")
        self.width, self.depth, self.threshold = o["width"], (None if depth == -1 else depth), threshold
        self.active_only = bool(o["active_only"])
        self.image_chunk = max(1, int(o["image_chunk"]))

    @classmethod
    def problem(cls, model: nn.Module, inputs: torch.Tensor | None = None) -> str | None:
        """Why Pathwise cannot explain ``model`` (no ReLU, unknown layers, not feed-forward); None if it can."""
        try:
            if inputs is None:
                check_layers(model, need_relu=True)
            else:
                unroll(model, as_model_input(inputs, model))
        except XWPError as e:
            return f"Pathwise does not apply: {e}"
        return None

    # ------------------------------------------------------------------ structure

    def _layers(self, x: torch.Tensor) -> tuple[list[nn.Module], list[int], list[int]]:
        """Unrolled layers, the positions of all ReLUs and of the ReLUs paths are built on."""
        layers = unroll(self.model, x)
        relus = [k for k, m in enumerate(layers) if isinstance(m, nn.ReLU)]
        depth = len(relus) if self.depth is None else min(self.depth, len(relus))
        return layers, relus, relus[len(relus) - depth :]

    @staticmethod
    def _is_mlp(layers: list[nn.Module]) -> bool:
        """Whether the layers are (flatten,) Linear, ReLU, Linear, ..., Linear: the closed form applies."""
        core = [m for m in layers if not isinstance(m, AutoFlatten | nn.Flatten | nn.Identity | nn.Dropout)]
        if not core or not all(isinstance(m, nn.Linear if k % 2 == 0 else nn.ReLU) for k, m in enumerate(core)):
            return False
        first = next(k for k, m in enumerate(layers) if isinstance(m, nn.Linear))
        return all(not isinstance(m, nn.Flatten | AutoFlatten) for m in layers[first:])

    def _threshold(self, n_classes: int) -> float:
        """The score a unit must beat."""
        if self.threshold is None:
            return -torch.inf
        return 1.0 / n_classes if self.threshold == "1/C" else float(self.threshold)

    def _prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inputs checked and moved to the model's device and dtype."""
        return as_model_input(inputs, self.model)

    # ------------------------------------------------------------------ public API

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions ``x * (dy_P/dx)[c]`` shaped like ``inputs`` (target None: the predicted class)."""
        if overrides:  # one call with other options: a fresh, validated instance (it copies nothing)
            return type(self)(self.model, **self.call_options(overrides)).attribute(inputs, target)
        x = self._prepare(inputs)
        layers, relus, selected = self._layers(x)
        with torch.no_grad():
            t = resolve_target(target, self.model(x))
        out = torch.empty_like(x)
        for start in range(0, x.shape[0], self.image_chunk):
            sl = slice(start, start + self.image_chunk)
            if self._is_mlp(layers):
                out[sl] = self._closed_form(layers, x[sl], t[sl])
            else:
                masks = self._select_autograd(layers, relus, selected, x[sl], t[sl])
                out[sl] = self._final(layers, masks, x[sl], t[sl])
        return out.reshape(inputs.shape).to(inputs.device)

    def select(self, inputs: torch.Tensor, target: Target = None) -> dict[int, torch.Tensor]:
        """The kept units: ``{layer position: bool (B, units)}`` for each ReLU layer paths are built on."""
        x = self._prepare(inputs)
        layers, relus, selected = self._layers(x)
        with torch.no_grad():
            t = resolve_target(target, self.model(x))
        return self._select_autograd(layers, relus, selected, x, t)

    def masked_output(self, inputs: torch.Tensor, masks: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits ``y_P`` of the network with the ReLUs at ``masks``' positions replaced by the masks."""
        x = self._prepare(inputs)
        layers = unroll(self.model, x)
        with torch.no_grad():
            return self._run(layers, x, 0, masks)

    # ------------------------------------------------------------------ algorithms

    @staticmethod
    def _run(layers: list[nn.Module], h: torch.Tensor, start: int, masks: dict[int, torch.Tensor]) -> torch.Tensor:
        """Layers ``start..`` on ``h``; a ReLU with a mask becomes ``u -> mask * u``."""
        for k in range(start, len(layers)):
            if k in masks:
                h = h * masks[k].reshape(h.shape).to(h.dtype)
            else:
                h = layers[k](h)
        return h

    @torch.no_grad()
    def _closed_form(self, layers: list[nn.Module], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """MLP: ``x * (W_L S_{L-1} ... S_1 W_1)[c]`` with all C rows carried while units are chosen."""
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        b, n_layers = x.shape[0], len(linears)
        flat = x.reshape(b, -1)
        hs, h = [], flat
        for lin in linears[:-1]:
            h = torch.relu(lin(h))
            hs.append(h)  # (B, n_k)
        n_classes = linears[-1].out_features
        depth = n_layers - 1 if self.depth is None else min(self.depth, n_layers - 1)
        lowest = n_layers - 1 - depth
        thr = self._threshold(n_classes)
        rows = torch.arange(b, device=x.device)
        jac = linears[-1].weight.expand(b, -1, -1)  # (B, C, n_{L-1})
        for k in reversed(range(n_layers - 1)):
            if k >= lowest:
                scores = (jac * hs[k][:, None, :]).softmax(1)[rows, t]  # (B, n_k)
                keep = select_units(scores, self.width, thr, hs[k] > 0 if self.active_only else None)
            else:
                keep = hs[k] > 0  # original ReLU gate
            if k == lowest and jac.shape[1] > 1:
                jac = jac[rows, t][:, None, :]  # below the lowest chosen layer only row c is needed
            jac = (jac * keep[:, None, :].to(jac.dtype)) @ linears[k].weight
        if jac.shape[1] > 1:
            jac = jac[rows, t][:, None, :]
        return (flat * jac[:, 0]).reshape(x.shape)

    def _select_autograd(
        self, layers: list[nn.Module], relus: list[int], selected: list[int], x: torch.Tensor, t: torch.Tensor
    ) -> dict[int, torch.Tensor]:
        """Choose the kept units top-down with autograd Jacobians of the masked upper network."""
        with torch.no_grad():
            acts, h = {}, x
            for k, layer in enumerate(layers):
                h = layer(h)
                if k in relus:
                    acts[k] = h
            n_classes = h.shape[1]
        b, thr = x.shape[0], self._threshold(n_classes)
        rows = torch.arange(b, device=x.device)
        eye = torch.eye(n_classes, dtype=x.dtype, device=x.device).repeat(b, 1)  # (B*C, C)
        masks: dict[int, torch.Tensor] = {}
        for k in reversed(selected):
            hk = acts[k]
            rep = hk.repeat_interleave(n_classes, 0).requires_grad_(True)  # (B*C, ...)
            up = {j: m.repeat_interleave(n_classes, 0) for j, m in masks.items()}
            with torch.enable_grad():
                y = self._run(layers, rep, k + 1, up)  # (B*C, C)
                (jac,) = torch.autograd.grad(y, rep, eye)
            flat_h = hk.reshape(b, -1)
            contrib = jac.reshape(b, n_classes, -1) * flat_h[:, None, :]  # (B, C, n)
            scores = contrib.softmax(1)[rows, t]
            masks[k] = select_units(scores, self.width, thr, flat_h > 0 if self.active_only else None)
        return masks

    def _final(self, layers: list[nn.Module], masks: dict[int, torch.Tensor], x: torch.Tensor, t: torch.Tensor):
        """``x * d y_P[c] / dx`` for the fully masked network."""
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = self._run(layers, xg, 0, masks)
            (grad,) = torch.autograd.grad(y.gather(1, t[:, None]).sum(), xg)
        return (x * grad).detach()

"""Activation-deactivation (AD): remove inputs by switching off the parts of the model that see them.

Chanchal, Kelly & Chockler, "Activation-Deactivation: a general framework for robust post-hoc
explainable AI" (arXiv:2510.01038, 2025). The paper's text was not available to us; what is
here follows section 3 of the project's related-methods specification (summarised in
docs/related-methods.md):

* **First layer Linear (MLPs): exact.** Switching off the first-layer weights of the removed
  inputs, ``z1 = (W1 diag(m)) x + b1``, equals ``W1 (m * x) + b1``, and everything after the
  first layer sees ``x`` only through ``z1``. So for an MLP, AD *is* occlusion with baseline 0
  (in the space the first Linear sees): ``f_AD(x; m) = f(m * x)`` (tested in float64).
* **First layer Conv2d (ConvAD): our reading of the paper.** A keep mask ``M`` (1 = visible,
  one per position, shared by the channels) travels with the activations: after a conv or a
  pooling layer it becomes ``maxpool(M)`` with the layer's kernel, stride, padding and dilation
  (the ANY-visible rule: a unit stays on if any input in its receptive field is visible), and
  after every conv, ReLU, batch norm and pooling layer the activations are multiplied by ``M``
  (a checkpoint after every module). At the first Flatten/Linear the mask is dropped. With
  nothing removed this is the original network; on a bias-free, BN-free ReLU CNN with zero
  padding it equals zero occlusion; otherwise it also switches off bias-driven responses of
  units whose whole receptive field is removed.

:func:`deactivate` is the removal operator (for deletion/insertion metrics);
:class:`ActivationDeactivation` is an occlusion-style attribution built on it.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xwp.attribution.common import Target, as_model_input, resolve_target
from xwp.attribution.registry import Method, register
from xwp.attribution.unroll import AutoFlatten, unroll
from xwp.devices import model_dtype
from xwp.errors import XWPError

_PASS = (nn.Flatten, AutoFlatten, nn.Identity, nn.Dropout)
_ELEMENTWISE = (nn.ReLU, nn.BatchNorm2d, nn.Dropout, nn.Identity)


def _pair(v) -> tuple[int, int]:
    """``v`` as a pair of ints."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """Zero padding of a conv as ``(left, right, top, bottom)`` for :func:`F.pad`."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        out = []
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation), strict=True):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = _pair(conv.padding)
    return (pw, pw, ph, ph)


def _any_visible(mask: torch.Tensor, kernel, stride, pad: tuple[int, int, int, int], dilation=1, ceil=False):
    """ANY-visible rule: a unit is visible if any position of its window is (padding is not)."""
    mask = F.pad(mask, pad, value=0.0)
    return F.max_pool2d(mask, _pair(kernel), _pair(stride), 0, _pair(dilation), ceil_mode=ceil)


def _keep_mask(keep_mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The keep mask broadcast to ``x`` as 0/1 values in x's dtype."""
    if keep_mask is None:
        return torch.ones_like(x)
    m = torch.as_tensor(keep_mask, device=x.device)
    try:
        m = m.expand(x.shape) if m.dim() == x.dim() else m.reshape(x.shape)
    except RuntimeError:
        raise XWPError(f"keep_mask of shape {tuple(m.shape)} does not fit inputs of shape {tuple(x.shape)}") from None
    m = m.to(x.dtype)
    if not ((m == 0) | (m == 1)).all():
        raise XWPError("keep_mask must hold only 0 (removed) and 1 (kept)")
    return m


def first_weight_layer(layers: list[nn.Module]) -> int:
    """Position of the first Linear or Conv2d; only flattening may come before it."""
    for k, m in enumerate(layers):
        if isinstance(m, nn.Linear | nn.Conv2d):
            return k
        if not isinstance(m, _PASS):
            break
    raise XWPError(
        "activation-deactivation needs a network whose first layer is nn.Linear or nn.Conv2d "
        "(only Flatten may come before it)"
    )


def run_deactivated(layers: list[nn.Module], x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Outputs of ``layers`` with the inputs where ``keep == 0`` deactivated (see the module docs)."""
    start = first_weight_layer(layers)
    h, m = x, keep
    for layer in layers[:start]:
        h, m = layer(h), layer(m)
    first = layers[start]
    if isinstance(first, nn.Linear):
        # the first-layer weights of removed inputs switched off: (W diag(m)) x = W (m * x)
        h = F.linear(h.reshape(h.shape[0], -1) * m.reshape(m.shape[0], -1), first.weight, first.bias)
        for layer in layers[start + 1 :]:
            h = layer(h)
        return h
    mask = m.amax(1, keepdim=True)  # (B, 1, H, W): a position is visible if any channel is
    h = h * m
    for k in range(start, len(layers)):
        layer = layers[k]
        if mask is None:
            h = layer(h)
        elif isinstance(layer, nn.Conv2d):
            h = layer(h * mask)
            mask = _any_visible(mask, layer.kernel_size, layer.stride, _conv_padding(layer), layer.dilation)
            h = h * mask
        elif isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):
            h = layer(h)
            ph, pw = _pair(layer.padding)
            dil = layer.dilation if isinstance(layer, nn.MaxPool2d) else 1
            geometry = (layer.kernel_size, layer.stride or layer.kernel_size, (pw, pw, ph, ph), dil)
            mask = _any_visible(mask, *geometry, ceil=layer.ceil_mode)
            mask = mask[..., : h.shape[-2], : h.shape[-1]]
            h = h * mask
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            h = layer(h)
            mask = F.adaptive_max_pool2d(mask, h.shape[-2:])
            h = h * mask
        elif isinstance(layer, _ELEMENTWISE):
            h = layer(h) * mask
        else:  # Flatten / Linear: the mask is dropped (zeros are already in place)
            mask = None
            h = layer(h)
    return h


def deactivate(model: nn.Module, inputs: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of ``model`` with the inputs where ``keep_mask == 0`` removed by deactivation.

    ``keep_mask`` broadcasts to ``inputs`` (1 = kept, 0 = removed; per image). For an MLP this
    is exactly ``model(keep_mask * inputs)`` (occlusion with baseline 0); for a conv net it is
    ConvAD with the ANY-visible rule (our reading of Chanchal, Kelly & Chockler 2025).
    """
    x = as_model_input(inputs, model)
    keep = _keep_mask(keep_mask, x)
    layers = unroll(model, x, need_relu=False)
    with torch.no_grad():
        return run_deactivated(layers, x, keep)


@register(
    "ad-occlusion",
    "AD occlusion",
    "perturbation",
    "Drop of the target probability when a window is removed by activation-deactivation.",
    "Chanchal, Kelly & Chockler 2025 (MLP: exact, = zero occlusion; ConvAD: our reading)",
    rank=150,
    tags=("study-conv",),  # on an MLP it equals occlusion (tested): the study runs it for CNNs only
)
class ActivationDeactivation(Method):
    """Occlusion-style attribution with AD removal: ``score(x) - score(x with a window deactivated)``.

    Windows of ``window x window`` positions move by ``stride`` (as Captum's Occlusion, whose
    last window may be cut by the border); a position's attribution is the mean over the windows
    covering it. All channels of a position are removed together. For an MLP this equals
    Occlusion with baseline 0 (tested); it differs for conv nets (ConvAD).

    Args:
        model: an MLP or a feed-forward conv net (never modified).
        output: ``"softmax"`` (target probability) or ``"logits"``.
        window, stride: window side and step, in positions (``stride <= window``).
        batch: deactivated copies evaluated at once.
        dtype: ``"float64"`` (default; a private float64 copy, as our Occlusion) or None (model's own).

    Every option may also be given to ``attribute`` for one call.
    """

    defaults = {"output": "softmax", "window": 1, "stride": 1, "batch": 256, "dtype": "float64"}

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self._check(self.options)
        self._copy: nn.Module | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _check(o: dict[str, Any]) -> None:
        """Raise XWPError for invalid options."""
        output, window, stride, dtype = o["output"], o["window"], o["stride"], o["dtype"]
        if output not in ("softmax", "logits"):
            raise XWPError(f"output must be 'softmax' or 'logits', got {output!r}")
        if not (isinstance(window, int) and isinstance(stride, int) and 1 <= stride <= window):
            raise XWPError(
                f"window and stride must be whole numbers with 1 <= stride <= window, got {window}, {stride}"
            )
        if dtype not in (None, "float32", "float64"):
            raise XWPError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")

    @classmethod
    def problem(cls, model: nn.Module, inputs: torch.Tensor | None = None) -> str | None:
        """Why activation-deactivation cannot run on ``model`` (first layer not Linear/Conv2d, ...); None if it can."""
        try:
            if inputs is None:
                leaves = [m for m in model.modules() if not list(m.children())]
                first_weight_layer(leaves)
            else:
                first_weight_layer(unroll(model, as_model_input(inputs, model), need_relu=False))
        except XWPError as e:
            return f"Activation-deactivation does not apply: {e}"
        return None

    def _run_model(self, dtype: str | None) -> nn.Module:
        """The model in the compute dtype (a private copy, made once, if the dtype differs)."""
        if dtype is None or getattr(torch, dtype) == model_dtype(self.model):
            return self.model
        with self._lock:
            if self._copy is None or model_dtype(self._copy) != getattr(torch, dtype):
                self._copy = copy.deepcopy(self.model).to(getattr(torch, dtype)).eval()
            return self._copy

    @staticmethod
    def _windows(shape: tuple[int, ...], window: int, stride: int) -> torch.Tensor:
        """Keep masks ``(N, *spatial)``, one per window (0 inside the window)."""
        spans = []
        for n in shape:
            w = min(window, n)
            count = math.ceil((n - w) / stride) + 1
            spans.append([(i * stride, min(n, i * stride + w)) for i in range(count)])
        masks = []
        if len(shape) == 1:
            for a, b in spans[0]:
                m = torch.ones(shape)
                m[a:b] = 0
                masks.append(m)
        else:
            for a, b in spans[0]:
                for c, d in spans[1]:
                    m = torch.ones(shape)
                    m[a:b, c:d] = 0
                    masks.append(m)
        return torch.stack(masks)

    @staticmethod
    def _score(logits: torch.Tensor, t: torch.Tensor, output: str) -> torch.Tensor:
        """Target probability or logit per row."""
        out = logits.softmax(1) if output == "softmax" else logits
        return out.gather(1, t[:, None])[:, 0]

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions shaped like ``inputs`` (target None: the predicted class)."""
        o = self.call_options(overrides)
        self._check(o)
        model = self._run_model(o["dtype"])
        x = as_model_input(inputs, model)
        layers = unroll(model, x, need_relu=False)
        first_weight_layer(layers)
        logits = model(x)
        t = resolve_target(target, logits)
        base = self._score(logits, t, o["output"])
        spatial = x.shape[-1:] if x.dim() == 2 else x.shape[-2:]
        keeps = self._windows(tuple(spatial), o["window"], o["stride"]).to(device=x.device, dtype=x.dtype)  # (N, *sp)
        removed = 1.0 - keeps
        counts = removed.sum(0)  # windows covering each position
        out = torch.zeros((x.shape[0],) + tuple(spatial), dtype=x.dtype, device=x.device)
        lead = x.shape[1:-2] if x.dim() > 2 else ()
        batch = max(1, int(o["batch"]))
        for b in range(x.shape[0]):
            for s in range(0, keeps.shape[0], batch):
                k = keeps[s : s + batch]
                kk = k.reshape((k.shape[0],) + (1,) * len(lead) + k.shape[1:]).expand((k.shape[0],) + x.shape[1:])
                xs = x[b : b + 1].expand_as(kk)
                scores = self._score(run_deactivated(layers, xs, kk), t[b].expand(k.shape[0]), o["output"])
                drop = base[b] - scores
                out[b] += (drop[:, None, None] if x.dim() > 2 else drop[:, None]).mul(removed[s : s + batch]).sum(0)
        out = out / counts.clamp(min=1)
        out = out.reshape((x.shape[0],) + (1,) * len(lead) + tuple(spatial)).expand(x.shape)
        return out.reshape(inputs.shape).to(device=inputs.device, dtype=inputs.dtype)

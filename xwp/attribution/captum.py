"""The Captum-backed baselines: one small class per Captum method, with our defaults.

Each class names its Captum method and declares its options in ``defaults``;
``output`` says what is explained (``"softmax"``, ``"logits"`` or a callable on logits),
``seed`` seeds stochastic methods, ``dtype`` optionally computes in another precision,
and :meth:`CaptumMethod.prepare` turns our options into Captum's arguments.
"""

from __future__ import annotations

import copy
import math
import threading
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from xwp.attribution.common import OutputModel, Target, as_model_input, resolve_target
from xwp.attribution.registry import Method, register
from xwp.errors import XWPError

CAPTUM_RNG_LOCK = threading.Lock()
"""Serialises Captum calls that seed the global RNGs (see ``CaptumMethod._run``)."""

ALL_SETS = ("evaluate", "study", "figure")


class CaptumMethod(Method):
    """A Captum attribution method applied to logits or softmax scores, with options bound over ``defaults``.

    ``attribute(inputs, target, **overrides)`` calls ``captum.attr.<captum_name>(...).attribute``
    with the bound options updated by ``overrides``; stochastic methods are seeded.
    """

    captum_name: str = ""
    #: Captum writes hooks or rules onto the model: work on a private copy
    copy_model: bool = False

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(copy.deepcopy(model) if self.copy_model else model, **options)
        self.forward = OutputModel(self.model, self.options.get("output", "logits")).eval()

    def prepare(self, forward: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Turn our options into Captum's arguments for inputs ``x`` (default: unchanged)."""
        return kwargs

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions shaped like ``inputs`` (in the model's dtype)."""
        x = as_model_input(inputs, self.model)
        with torch.no_grad():
            t = resolve_target(target, self.model(x))
        kwargs = {**self.options, **overrides}
        kwargs.pop("output", None)  # bound in self.forward
        seed = kwargs.pop("seed", 0)
        forward, x_run = self.forward, x
        compute = kwargs.pop("dtype", None)
        if compute not in (None, "float32", "float64"):
            raise XWPError(f"dtype must be None, 'float32' or 'float64', got {compute!r}")
        if compute is not None and getattr(torch, compute) != x.dtype:
            forward, x_run = self._converted(getattr(torch, compute)), x.to(getattr(torch, compute))
        kwargs = self.prepare(forward, x_run, kwargs)
        attr = self._run(forward, x_run, t, kwargs, seed)
        return attr.detach().to(x.dtype).reshape(inputs.shape).to(inputs.device)

    def _converted(self, dtype: torch.dtype) -> OutputModel:
        """The scored model in another dtype (a private copy, made once)."""
        if getattr(self, "_copy_dtype", None) != dtype:
            self._copy = OutputModel(copy.deepcopy(self.model).to(dtype), self.forward.output).eval()
            self._copy_dtype = dtype
        return self._copy

    def _run(self, forward: nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any], seed: int):
        """Call Captum with seeded torch and numpy RNGs (both restored afterwards).

        Captum 0.9 has no generator argument: Shapley sampling and KernelSHAP draw from
        torch's global RNG, GradientSHAP also from numpy's. Seeding the global RNGs is
        only per call when no other thread draws meanwhile, so calls are serialised under
        one process-wide lock (:data:`CAPTUM_RNG_LOCK`); concurrent app sessions then get
        the same map for the same seed.
        """
        import captum.attr

        method = getattr(captum.attr, self.captum_name)(forward)
        with CAPTUM_RNG_LOCK:
            return self._seeded(method, x, t, kwargs, seed)

    def _seeded(self, method, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any], seed: int):
        """Run ``method`` with the global RNGs seeded (caller holds :data:`CAPTUM_RNG_LOCK`)."""
        np_state = np.random.get_state()  # Captum's GradientShap draws from numpy's global RNG
        try:
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
                warnings.simplefilter("ignore")
                torch.manual_seed(seed)
                np.random.seed(seed)
                return method.attribute(x, target=t, **kwargs)
        finally:
            np.random.set_state(np_state)


def superpixel_mask(x: torch.Tensor, size: int) -> torch.Tensor | None:
    """Feature mask grouping ``size x size`` pixel blocks (None for ``size == 1``)."""
    if size <= 1:
        return None
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device) // size
    cols = torch.arange(w, device=x.device) // size
    ids = rows[:, None] * math.ceil(w / size) + cols[None, :]  # (H, W)
    return ids.expand((1,) * (x.dim() - 2) + (h, w))


class _SuperpixelMethod(CaptumMethod):
    """A Captum method with a ``superpixel`` size option, turned into Captum's ``feature_mask``."""

    def prepare(self, forward: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Replace ``superpixel`` by a ``feature_mask`` for ``x``."""
        kwargs["feature_mask"] = superpixel_mask(x, kwargs.pop("superpixel"))
        return kwargs


@register(
    "occlusion",
    "Occlusion",
    "perturbation",
    "Set a window of pixels to 0 and measure the drop of the target probability.",
    "Zeiler & Fergus 2014; captum.attr.Occlusion",
    rank=30,
    tags=("app-default", *ALL_SETS),
)
class OcclusionMethod(CaptumMethod):
    """Captum Occlusion (window x window patches) on softmax scores, computed in float64.

    Occlusion differences softmax outputs: for a confident prediction (p within float32
    rounding of 1) they vanish in float32 and the map turns into rounding noise, which
    cost it half its deletion AUC on Fashion-MNIST (bench/study_checks.py).
    ``dtype=None`` runs it in the model's own dtype.

    With the default 1-pixel window, stride 1 and a zero baseline, a pixel that is already 0
    does not change when it is occluded: its effect is exactly 0, and only the non-zero
    pixels are evaluated, all rows of a call in one batched forward pass (a drawn digit has
    ~150 of 784; the Explain page's slowest default method). Other settings call
    Captum. Equal to Captum's Occlusion within float rounding (tests/test_captum_methods.py).
    """

    captum_name = "Occlusion"
    per_image_deterministic = True  # each image's map depends on that image alone: xwp.serve.compute may batch it
    #: most perturbed rows per forward pass of the sparse path
    rows_per_pass = 4096
    defaults = {
        "output": "softmax",
        "window": 1,
        "stride": 1,
        "baselines": 0.0,
        "perturbations_per_eval": 64,
        "dtype": "float64",
    }

    def prepare(self, forward: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Turn ``window``/``stride`` ints into Captum's shape tuples for ``x``."""
        window, stride = kwargs.pop("window"), kwargs.pop("stride")
        lead = (1,) * (x.dim() - 3)
        spatial = 2 if x.dim() >= 3 else 1
        kwargs["sliding_window_shapes"] = lead + (window,) * spatial
        kwargs["strides"] = lead + (stride,) * spatial
        return kwargs

    def _run(self, forward: nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any], seed: int):
        """The sparse path for 1-pixel windows on a zero baseline; Captum otherwise."""
        unit = all(v == 1 for v in (*kwargs["sliding_window_shapes"], *kwargs["strides"]))
        baseline = kwargs.get("baselines", 0.0)
        if not unit or not isinstance(baseline, int | float) or baseline != 0:
            return super()._run(forward, x, t, kwargs, seed)
        flat = x.reshape(x.shape[0], -1)
        out = torch.zeros_like(flat)
        with torch.no_grad():
            full = forward(x).gather(1, t.reshape(-1, 1)).flatten()  # (n,) target scores of the inputs
            img, pix = torch.nonzero(flat, as_tuple=True)
            for start in range(0, len(img), self.rows_per_pass):
                i, j = img[start : start + self.rows_per_pass], pix[start : start + self.rows_per_pass]
                rows = flat[i].clone()
                rows[torch.arange(len(i)), j] = 0.0
                scores = forward(rows.reshape(len(i), *x.shape[1:])).gather(1, t[i].reshape(-1, 1)).flatten()
                out[i, j] = full[i] - scores
        return out.reshape(x.shape)


@register(
    "shapley",
    "Shapley",
    "perturbation",
    "Shapley values estimated from random feature permutations (zero baseline).",
    "Strumbelj & Kononenko 2010; captum.attr.ShapleyValueSampling",
    rank=40,
    tags=ALL_SETS,
)
class ShapleyMethod(_SuperpixelMethod):
    """Captum ShapleyValueSampling on softmax scores (Strumbelj & Kononenko 2010)."""

    captum_name = "ShapleyValueSampling"
    defaults = {
        "output": "softmax",
        "n_samples": 10,
        "superpixel": 1,
        "baselines": 0.0,
        "perturbations_per_eval": 64,
        "seed": 0,
        "dtype": None,
    }


@register(
    "kernelshap",
    "KernelSHAP",
    "perturbation",
    "Weighted linear regression on random coalitions of superpixels (Lundberg & Lee).",
    "Lundberg & Lee 2017; captum.attr.KernelShap",
    rank=50,
    tags=("study",),
)
class KernelShapMethod(_SuperpixelMethod):
    """Captum KernelShap on softmax scores (Lundberg & Lee 2017; needs scikit-learn)."""

    captum_name = "KernelShap"
    defaults = {
        "output": "softmax",
        "n_samples": 300,
        "superpixel": 2,
        "baselines": 0.0,
        "perturbations_per_eval": 300,
        "seed": 0,
    }


@register(
    "ig",
    "Integrated Gradients",
    "gradient",
    "Gradients integrated along the straight path from a black image to the input.",
    "Sundararajan, Taly & Yan 2017; captum.attr.IntegratedGradients",
    rank=70,
    tags=("app-default", *ALL_SETS),
)
class IntegratedGradientsMethod(CaptumMethod):
    """Captum IntegratedGradients on softmax scores (Sundararajan, Taly & Yan 2017)."""

    captum_name = "IntegratedGradients"
    per_image_deterministic = True  # fixed steps and baseline: xwp.serve.compute may batch it
    defaults = {"output": "softmax", "n_steps": 50, "baselines": 0.0, "internal_batch_size": 4096}


@register(
    "lrp",
    "LRP",
    "propagation",
    "Relevance propagated backwards from the target logit with the epsilon rule.",
    "Bach et al. 2015, Binder et al. 2016; captum.attr.LRP",
    rank=80,
    tags=ALL_SETS,
)
class LRPMethod(CaptumMethod):
    """Captum's LRP on logits with an epsilon rule on every linear and conv layer (Bach et al. 2015).

    Captum has no rule for softmax, so there is no ``output`` option. Captum drops custom
    rules after each call and writes state onto the layers, so the model is copied once
    and the rules are set before every call.
    """

    captum_name = "LRP"
    copy_model = True
    defaults = {"epsilon": 1e-9}

    def prepare(self, forward: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Attach an epsilon rule to every linear and conv layer of the private model (pooling keeps Captum's)."""
        from captum.attr._utils.lrp_rules import EpsilonRule

        eps = kwargs.pop("epsilon")
        for m in forward.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                m.rule = EpsilonRule(epsilon=eps)
        return kwargs


@register(
    "saliency",
    "Saliency",
    "gradient",
    "Absolute gradient of the target probability with respect to each pixel.",
    "Simonyan, Vedaldi & Zisserman 2013; captum.attr.Saliency",
    rank=90,
    tags=("study",),
)
class SaliencyMethod(CaptumMethod):
    """Captum Saliency on softmax scores (Simonyan, Vedaldi & Zisserman 2013)."""

    captum_name = "Saliency"
    defaults = {"output": "softmax", "abs": True}


@register(
    "deeplift",
    "DeepLIFT",
    "propagation",
    "Difference from a black reference propagated with the rescale rule.",
    "Shrikumar, Greenside & Kundaje 2017; captum.attr.DeepLift",
    rank=100,
    tags=("study",),
)
class DeepLiftMethod(CaptumMethod):
    """Captum DeepLift on logits (Shrikumar et al. 2017); its hooks live on a private copy of the model."""

    captum_name = "DeepLift"
    copy_model = True
    defaults = {"output": "logits", "baselines": 0.0}


@register(
    "gradientshap",
    "GradientSHAP",
    "gradient",
    "Expected gradients on noisy points between a black baseline and the input.",
    "Lundberg & Lee 2017; captum.attr.GradientShap",
    rank=110,
    tags=("study",),
)
class GradientShapMethod(CaptumMethod):
    """Captum GradientShap on softmax scores (Lundberg & Lee 2017)."""

    captum_name = "GradientShap"
    defaults = {"output": "softmax", "n_samples": 50, "stdevs": 0.1, "baselines": None, "seed": 0}

    def prepare(self, forward: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Use an all-zero (background) baseline unless one is given."""
        if kwargs.get("baselines") is None:
            kwargs["baselines"] = torch.zeros((1,) + x.shape[1:], dtype=x.dtype, device=x.device)
        return kwargs

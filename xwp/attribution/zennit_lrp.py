"""Layer-wise relevance propagation (LRP) with Zennit's composites.

Zennit: Anders et al., "Software for dataset-wide XAI: from local explanations to global
insights with Zennit, CoRelAy, and ViRelAy" (2021); the rules: Montavon et al.,
"Layer-wise relevance propagation: an overview" (2019).

Two composites that LRP users actually use, each a registered method:

* ``lrp-epsilon-plus-flat`` (:class:`zennit.composites.EpsilonPlusFlat`): flat rule on the first
  Linear/Conv layer, z+ on the other conv layers, epsilon on the other dense layers. The flat rule
  spreads a unit's relevance evenly over its receptive field; a *dense* first layer's field is the
  whole image, so on an MLP every pixel gets the same value (a constant map, tested: it carries no
  ranking and fails the sanity checks, docs/results/sanity.md). It is meant for conv nets.
* ``lrp-gamma-box`` (:class:`zennit.composites.EpsilonGammaBox`): z^B (box) rule on the first layer
  with the input's bounds (``low=0, high=1`` for our [0, 1] images), gamma on the other conv
  layers, epsilon on the dense layers. Zennit's stock composite applies z^B to a *conv* first
  layer only; we add the same z^B rule for a *Linear* first layer so that MLPs get it too.

ReLUs pass relevance through, max-pooling routes it to the maximum (the gradient), average
pooling uses Zennit's ``Norm`` rule. Relevance starts as ``f_c(x)`` on the target logit (as
Captum's LRP does), so on a bias-free network the input relevance sums to about ``f_c(x)``.

Zennit attaches hooks (and, for its rules, temporarily swaps parameters), so every call runs on
a private copy of the model under a lock; the caller's model is never touched.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, ClassVar

import torch
from torch import nn

from xwp.attribution.common import Target, as_model_input, resolve_target
from xwp.attribution.registry import Method, register
from xwp.attribution.unroll import check_layers
from xwp.errors import XWPError

REFERENCE = "Montavon et al. 2019; Anders et al. 2021 (zennit.composites.{})"


def _check_layers(model: nn.Module) -> None:
    """Raise XWPError if ``model`` has layers without an LRP rule here, or no Linear/Conv layer."""
    check_layers(model, need_relu=False)
    if not any(isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d) for m in model.modules()):
        raise XWPError("LRP needs a network with Linear or Conv layers")


class ZennitLRP(Method):
    """LRP with a Zennit composite (:meth:`composite`); ``attribute(inputs, target)`` returns input relevance.

    The model is copied once (Zennit hooks and swaps parameters while it runs) and every call
    runs on that copy under a lock. Subclasses name the composite and declare its options:
    ``epsilon`` (dense layers), ``stabilizer`` (the other rules), and for ``lrp-gamma-box``
    ``gamma`` (conv layers after the first) and ``low``/``high`` (the input's bounds for z^B).
    """

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, **options: Any):
        _check_layers(model)
        super().__init__(copy.deepcopy(model).eval(), **options)  # self.model: the private copy
        self._check(self.options)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._lock = threading.Lock()

    @staticmethod
    def _check(o: dict[str, Any]) -> None:
        """Raise XWPError for options Zennit would fail on later."""
        if "low" in o and not float(o["low"]) < float(o["high"]):
            raise XWPError(f"low must be below high, got low={o['low']}, high={o['high']}")

    @classmethod
    def problem(cls, model: nn.Module, inputs: torch.Tensor | None = None) -> str | None:
        """Why the Zennit composites cannot explain ``model`` (a layer without a rule here); None if they can."""
        try:
            _check_layers(model)
        except XWPError as e:
            return f"Zennit LRP does not apply: {e}"
        return None

    def composite(self, o: dict[str, Any]):
        """A fresh Zennit composite for one call with options ``o``."""
        raise NotImplementedError

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Input relevance shaped like ``inputs``, starting from ``f_c(x)`` on the target logit."""
        o = self.call_options(overrides)
        self._check(o)
        x = as_model_input(inputs, self.model).detach()
        with self._lock:
            with torch.no_grad():
                t = resolve_target(target, self.model(x))
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad(), self.composite(o).context(self.model) as hooked:
                logits = hooked(xg)
                start = torch.zeros_like(logits).scatter_(1, t[:, None], logits.gather(1, t[:, None]).detach())
                (relevance,) = torch.autograd.grad(logits, xg, start)
        return relevance.detach().reshape(inputs.shape).to(inputs.device)


@register(
    "lrp-epsilon-plus-flat",
    "LRP ε+♭ (Zennit)",
    "propagation",
    "Zennit's EpsilonPlusFlat: flat rule on the first layer, z+ on convs, epsilon on dense layers. "
    "On an MLP the map is constant (the flat rule spreads over the whole image); meant for conv nets.",
    REFERENCE.format("EpsilonPlusFlat"),
    rank=130,
    tags=("study",),
)
class EpsilonPlusFlatLRP(ZennitLRP):
    """Zennit's ``EpsilonPlusFlat``: flat rule on the first layer, z+ on the other convs, epsilon on dense layers."""

    defaults = {"epsilon": 1e-6, "stabilizer": 1e-6}

    def composite(self, o: dict[str, Any]):
        """``EpsilonPlusFlat`` with batch norm merged into the layer before it."""
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import EpsilonPlusFlat

        return EpsilonPlusFlat(
            epsilon=float(o["epsilon"]), stabilizer=float(o["stabilizer"]), canonizers=[SequentialMergeBatchNorm()]
        )


@register(
    "lrp-gamma-box",
    "LRP γ-box (Zennit)",
    "propagation",
    "Zennit's EpsilonGammaBox: z^B rule on the first layer (pixels in [0, 1]), gamma on convs, epsilon on dense.",
    REFERENCE.format("EpsilonGammaBox"),
    rank=140,
    tags=("study",),
)
class GammaBoxLRP(ZennitLRP):
    """Zennit's ``EpsilonGammaBox`` with the input's bounds; z^B also on a Linear first layer (Zennit: conv only)."""

    defaults = {"epsilon": 1e-6, "gamma": 0.25, "low": 0.0, "high": 1.0, "stabilizer": 1e-6}

    def composite(self, o: dict[str, Any]):
        """``EpsilonGammaBox`` with ``(nn.Linear, ZBox)`` added to its first-layer map."""
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import EpsilonGammaBox
        from zennit.rules import ZBox

        low, high, stabilizer = float(o["low"]), float(o["high"]), float(o["stabilizer"])
        return EpsilonGammaBox(
            low=low,
            high=high,
            epsilon=float(o["epsilon"]),
            gamma=float(o["gamma"]),
            stabilizer=stabilizer,
            first_map=[(nn.Linear, ZBox(low=low, high=high, stabilizer=stabilizer))],  # Zennit maps only a conv
            canonizers=[SequentialMergeBatchNorm()],
        )

"""Layer-wise relevance propagation (LRP) with Zennit's composites.

Zennit: Anders et al., "Software for dataset-wide XAI: from local explanations to global
insights with Zennit, CoRelAy, and ViRelAy" (2021); the rules: Montavon et al.,
"Layer-wise relevance propagation: an overview" (2019).

Two composites that LRP users actually use:

* ``epsilon-plus-flat`` (:class:`zennit.composites.EpsilonPlusFlat`): flat rule on the first
  Linear/Conv layer, z+ on the other conv layers, epsilon on the other dense layers.
* ``gamma-box`` (:class:`zennit.composites.EpsilonGammaBox`): z^B (box) rule on the first layer
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

import torch
from torch import nn

from xwp.errors import XWPError
from xwp.unroll import leaf_layers

Target = int | torch.Tensor | list[int] | None

COMPOSITES = ("epsilon-plus-flat", "gamma-box")


def _resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Targets ``(B,)``; None is the predicted class."""
    b, c = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise XWPError(f"target must be a class index, got dtype {t.dtype}")
    t = t.long().reshape(-1)
    t = t.expand(b) if t.numel() == 1 else t
    if t.numel() != b:
        raise XWPError(f"target has {t.numel()} entries for a batch of {b}")
    if ((t < 0) | (t >= c)).any():
        raise XWPError(f"target class out of range 0..{c - 1}")
    return t


def problem(model: nn.Module) -> str | None:
    """Why the Zennit composites cannot explain ``model`` (None if they can), for the app."""
    try:
        _check_layers(model)
    except XWPError as e:
        return f"Zennit LRP does not apply: {e}"
    return None


def _check_layers(model: nn.Module) -> None:
    """Raise XWPError if ``model`` has layers without an LRP rule here, or no Linear/Conv layer."""
    leaf_layers(model)
    if not any(isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d) for m in model.modules()):
        raise XWPError("LRP needs a network with Linear or Conv layers")


class ZennitLRP:
    """LRP with a Zennit composite; ``attribute(inputs, target)`` returns input relevance.

    Args:
        model: a network of Linear, Conv, ReLU, pooling, Flatten, Dropout, BatchNorm layers.
        composite: ``"epsilon-plus-flat"`` or ``"gamma-box"``.
        epsilon: stabiliser of the epsilon rule on dense layers (Zennit's default 1e-6).
        gamma: gamma of the gamma rule on conv layers after the first (``gamma-box`` only).
        low, high: the input's bounds for the z^B rule (``gamma-box`` only).
        stabilizer: stabiliser of the other rules (Zennit's default 1e-6).
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str = "epsilon-plus-flat",
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        low: float = 0.0,
        high: float = 1.0,
        stabilizer: float = 1e-6,
    ):
        if composite not in COMPOSITES:
            raise XWPError(f"composite must be one of {', '.join(COMPOSITES)}, got {composite!r}")
        if not float(low) < float(high):
            raise XWPError(f"low must be below high, got low={low}, high={high}")
        _check_layers(model)
        self.composite_name = composite
        self.epsilon, self.gamma, self.stabilizer = float(epsilon), float(gamma), float(stabilizer)
        self.low, self.high = float(low), float(high)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._lock = threading.Lock()

    def _composite(self):
        """A fresh Zennit composite for one call."""
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
        from zennit.rules import ZBox

        canonizers = [SequentialMergeBatchNorm()]
        if self.composite_name == "epsilon-plus-flat":
            return EpsilonPlusFlat(epsilon=self.epsilon, stabilizer=self.stabilizer, canonizers=canonizers)
        box = ZBox(low=self.low, high=self.high, stabilizer=self.stabilizer)
        return EpsilonGammaBox(
            low=self.low,
            high=self.high,
            epsilon=self.epsilon,
            gamma=self.gamma,
            stabilizer=self.stabilizer,
            first_map=[(nn.Linear, box)],  # Zennit maps only a conv first layer to z^B
            canonizers=canonizers,
        )

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Input relevance shaped like ``inputs``, starting from ``f_c(x)`` on the target logit."""
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
            raise XWPError("inputs must be a tensor with a batch dimension")
        p = next(self.model.parameters())
        x = inputs.detach().to(device=p.device, dtype=p.dtype)
        with self._lock:
            with torch.no_grad():
                t = _resolve_target(target, self.model(x))
            xg = x.clone().requires_grad_(True)
            composite = self._composite()
            with torch.enable_grad(), composite.context(self.model) as hooked:
                logits = hooked(xg)
                start = torch.zeros_like(logits).scatter_(1, t[:, None], logits.gather(1, t[:, None]).detach())
                (relevance,) = torch.autograd.grad(logits, xg, start)
        return relevance.detach().reshape(inputs.shape).to(inputs.device)

"""XWP and XWPc: attribution by putting first-layer weights back to their initial values.

Lympelopoulos & Kanellopoulou, "From Weight Perturbation to Feature Attribution for
Explaining Fully Connected Neural Networks" (2026), eqs. 3-5. Both are two-term
differences of the target evidence ``score(f) = sum_n I_n f_n`` (eq. 4):

- XWP (eq. 3):  ``R_i   = score(f(x)) - score(f^{W_i = W_i^0}(x))``
- XWPc:         ``R^c_i = score(f^{W = W^0, W_i = W_i}(x)) - score(f^{W = W^0}(x))``

Swapping column ``i`` of the first layer changes its pre-activation by a rank-1 term,
``h1 + x_i * delta_i``, so every non-zero feature of every image goes through layers
2..L in one batched pass. The model is never modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xwp.attribution.common import Target, as_model_input, broadcast_target, indicator, output_fn, resolve_target
from xwp.attribution.registry import Method, register
from xwp.devices import CHUNK_ELEMENTS, CHUNK_ELEMENTS_CUDA, run_chunked
from xwp.errors import XWPError
from xwp.models import MLP

PAPER = "Lympelopoulos & Kanellopoulou 2026"


def split_first_linear(model: nn.Module) -> tuple[nn.Linear, Callable[[torch.Tensor], torch.Tensor]]:
    """The first ``nn.Linear`` of a fully connected network and the function applied after it."""
    if isinstance(model, MLP):
        return model.linears[0], _fast_rest(model.linears[1:])
    if isinstance(model, nn.Sequential):
        for k, m in enumerate(model):
            if isinstance(m, nn.Linear):
                return m, model[k + 1 :]
            if not isinstance(m, nn.Flatten):
                break
    raise XWPError(
        "XWP needs a fully connected network whose first layer is nn.Linear: "
        "an xwp.MLP, or an nn.Sequential of (Flatten,) Linear, ReLU, Linear, ..."
    )


def _fast_rest(linears: list[nn.Linear]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Layers 2..L of a ReLU MLP, with in-place ReLUs on the (owned) pre-activation buffer."""

    def rest(h: torch.Tensor) -> torch.Tensor:
        for layer in linears:
            h = torch.addmm(layer.bias, h.relu_(), layer.weight.t())  # (N, next width)
        return h

    return rest


def _initial_first_weight(model: nn.Module, initial_model: nn.Module | None) -> torch.Tensor:
    """First-layer weights at initialisation, from ``initial_model`` or the model's own buffers."""
    if initial_model is not None:
        w0 = split_first_linear(initial_model)[0].weight
    elif isinstance(model, MLP):
        w0 = model.initial_state()["0.weight"]
    else:
        raise XWPError(
            "XWP needs the network's initial state: pass initial_model= "
            "(the same architecture at its initial weights) or use xwp.MLP, which keeps it"
        )
    w = split_first_linear(model)[0].weight
    if w0.shape != w.shape:
        raise XWPError(f"initial first layer has shape {tuple(w0.shape)}, the model has {tuple(w.shape)}")
    return w0.detach().to(device=w.device, dtype=w.dtype)


class _WeightPerturbation(Method):
    """Shared machinery of XWP and XWPc: the target evidence before and after a rank-1 first-layer change."""

    defaults = {"output": "softmax", "chunk_elements": None, "image_chunk": 1024}

    def __init__(self, model: nn.Module, initial_model: nn.Module | None = None, **options: Any):
        super().__init__(model, **options)
        self.first, self.rest = split_first_linear(model)
        self.w0 = _initial_first_weight(model, initial_model)  # (H, D)
        self.output = self.options["output"]
        self.out = output_fn(self.output)
        on_gpu = self.w0.device.type == "cuda"
        chunk = self.options["chunk_elements"] or (CHUNK_ELEMENTS_CUDA if on_gpu else CHUNK_ELEMENTS)
        self.chunk_elements = int(chunk)
        self.image_chunk = max(1, int(self.options["image_chunk"]))

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Attributions shaped like ``inputs`` for ``target`` (int, ``(B,)`` or None: the predicted class).

        Images go through in chunks of ``image_chunk``, so the index and score arrays stay
        bounded however many images are given; only the result grows with the batch.
        """
        x = as_model_input(inputs, self.model)
        b = x.shape[0]
        if target is not None:  # one entry per image; classes are checked per chunk
            target = broadcast_target(target, b, x.device)
        out = torch.empty(b, x[0].numel(), dtype=x.dtype, device=x.device)
        for start in range(0, b, self.image_chunk):
            stop = min(b, start + self.image_chunk)
            x_flat = self._flatten(x[start:stop])  # (b, D)
            out[start:stop] = self._attribute(x_flat, None if target is None else target[start:stop])
        return out.reshape(inputs.shape).to(inputs.device)

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Attributions ``(b, D)`` of one chunk of flat images ``x``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the two terms

    def _first_layer(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """First pre-activation ``h1 = x W^T + b`` ``(B, H)`` with the given first-layer weights."""
        b = self.first.bias
        b = b.detach() if b is not None else torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        return torch.addmm(b, x, weight.t())  # (B, H)

    def _score_h1(self, h1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:meth:`_score` of the network's output at pre-activations ``h1`` ``(B, H)``."""
        return self._score(self.rest(h1.clone()), target)  # rest() works in place

    def _perturbed_scores(
        self, h1: torch.Tensor, delta: torch.Tensor, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_score` at ``h1[b] + x[b, i] * delta[i]`` for every non-zero ``x[b, i]``.

        ``h1`` ``(B, H)``: the unperturbed pre-activations; ``delta`` ``(D, H)``: the change of
        ``h1`` per unit of ``x_i`` when column ``i`` of the first layer is swapped. Returns the
        image and feature indices ``(N,)``, ``(N,)`` of the non-zero inputs and their scores ``(N, k)``.
        """
        b_idx, i_idx = torch.nonzero(x, as_tuple=True)  # (N,), (N,)
        values = x[b_idx, i_idx]  # (N,)
        scores = torch.empty(b_idx.numel(), self._score_width(), dtype=x.dtype, device=x.device)  # (N, k)
        chunk = max(1, self.chunk_elements // delta.shape[1])

        def work(start: int, stop: int) -> None:
            bi, ii = b_idx[start:stop], i_idx[start:stop]
            h = h1.index_select(0, bi)  # (n, H): the unperturbed pre-activation of each row's image
            h.addcmul_(delta.index_select(0, ii), values[start:stop, None])  # + x_i * delta_i
            scores[start:stop] = self._score(self.rest(h), target.index_select(0, bi))

        run_chunked(b_idx.numel(), chunk, work)
        return b_idx, i_idx, scores

    # ------------------------------------------------------------------ the score of eq. 4, exactly

    def _score_width(self) -> int:
        """Columns ``k`` of :meth:`_score`: 2 for softmax (``p_t``, ``1 - p_t``), else 1."""
        return 2 if self.output == "softmax" else 1

    def _score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What ``score = sum_n I_n out_n(logits)`` (eq. 4) needs per row, ``(n, k)``; see :meth:`_difference`.

        For softmax, ``sum_n I_n p_n = 2 p_t - 1 = 1 - 2 q`` with ``q = 1 - p_t``: both ``p_t``
        and ``q`` are kept, each computed from log-sum-exps, so that a confident prediction
        (``p_t`` within float32 rounding of 1) still gives exact differences through ``q``.
        """
        logit_t = logits.gather(1, target[:, None])  # (n, 1)
        if self.output == "softmax":
            lse = torch.logsumexp(logits, 1, keepdim=True)  # (n, 1)
            others = torch.logsumexp(logits.scatter(1, target[:, None], -torch.inf), 1, keepdim=True)  # (n, 1)
            return torch.cat([torch.exp(logit_t - lse), torch.exp(others - lse)], 1)  # (n, 2): p_t, 1 - p_t
        if self.output == "logits":
            return 2.0 * logit_t - logits.sum(1, keepdim=True)  # (n, 1)
        return (self.out(logits) * indicator(target, logits.shape[1], logits.dtype)).sum(1, keepdim=True)  # (n, 1)

    @staticmethod
    def _difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``score(a) - score(b)`` ``(n,)`` from two :meth:`_score` values ``(n, k)``."""
        if a.shape[1] == 1:
            return a[:, 0] - b[:, 0]
        confident = torch.minimum(a[:, 0], b[:, 0]) > 0.5  # differences of small q are exact there
        return torch.where(confident, 2.0 * (b[:, 1] - a[:, 1]), 2.0 * (a[:, 0] - b[:, 0]))

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        """Images as rows ``(B, D)``, checked against the first layer's width."""
        x = x.reshape(x.shape[0], -1)  # (B, D)
        if x.shape[1] != self.first.in_features:
            raise XWPError(f"inputs have {x.shape[1]} features, the model expects {self.first.in_features}")
        return x


@register(
    "xwp",
    "XWP",
    "weight perturbation",
    "First-layer weights of feature i back to their initial values; loss of target evidence.",
    f"{PAPER}, eq. 3",
    rank=10,
    needs_initial=True,
    tags=("app-default", "evaluate", "study", "figure"),
)
class XWP(_WeightPerturbation):
    """Explainable Weight Perturbation (XWP), the paper's eq. 3.

    ``R_i(x) = sum_n I_n (f_n(x) - f_n^{W_i = W_i^0}(x))``: how much worse the trained
    network does for the target when only the first-layer weights attached to feature
    ``i`` go back to their initial values ("what did feature i achieve, given every
    other update"). Biases and deeper layers stay trained.

    Args:
        model: a fully connected network (``xwp.MLP`` or an ``nn.Sequential`` whose
            first layer is ``nn.Linear``) returning logits.
        initial_model: the same architecture at its initial weights; optional for an
            ``xwp.MLP``, which keeps its initial state.
        output: ``"softmax"`` (the paper), ``"logits"``, or a callable on logits.
        chunk_elements: bound on the size of the perturbed first-layer batch (default
            2**20 elements on a CPU, 2**26 on a GPU; halved on CUDA out-of-memory).
        image_chunk: images prepared together (bounds the index and score arrays).

    Features with ``x_i = 0`` get exactly 0.
    """

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Eq. 3 for one chunk of flat images ``x`` ``(B, D)``."""
        w = self.first.weight.detach()  # (H, D): trained
        h1 = self._first_layer(x, w)  # (B, H): the trained network's first pre-activation
        logits = self.rest(h1.clone())  # (B, C); rest() works in place
        t = resolve_target(target, logits)  # (B,)
        delta = (self.w0 - w).t().contiguous()  # (D, H): change of h1 per unit of x_i when W_i -> W_i^0
        trained = self._score(logits, t)  # (B, k): sum_n I_n f_n(x)
        b_idx, i_idx, swapped = self._perturbed_scores(h1, delta, x, t)  # (N, k): sum_n I_n f_n^{W_i=W_i^0}(x)
        attr = torch.zeros_like(x)  # (B, D)
        attr[b_idx, i_idx] = self._difference(trained[b_idx], swapped)  # eq. 3
        return attr


@register(
    "xwpc",
    "XWPᶜ",
    "weight perturbation",
    "First layer at its initial values; only feature i gets its trained weights back.",
    f"{PAPER}, eq. 5 (as described in the text)",
    rank=20,
    needs_initial=True,
    tags=("app-default", "evaluate", "study", "figure"),
)
class XWPc(_WeightPerturbation):
    """Complementary XWP (XWP^c): what feature ``i`` achieves by itself.

    ``R^c_i(x) = sum_n I_n (f_n^{W = W^0, W_i = W_i}(x) - f_n^{W = W^0}(x))``: the first
    layer starts at its initial weights and only feature ``i`` gets its trained
    weights back. Biases and deeper layers stay trained.

    The paper prints eq. 5 as ``sum_n I_n (f_n(x) - f_n^{W_i' = W_i'^0}(x))`` with ``i'``
    every feature but ``i``. Read literally that equals ``C(x) - R^c_i(x)`` with ``C`` the
    same for every feature: it ranks features in reverse (background first), which
    contradicts the paper's own figures and table. We implement ``R^c`` (the text's
    "what did I achieve only by myself"); ``rule="eq5-literal"`` gives the literal
    reading for comparison.

    Args: as :class:`XWP`, plus ``rule`` (``"isolated"`` or ``"eq5-literal"``).
    """

    RULES = ("isolated", "eq5-literal")
    defaults = {**_WeightPerturbation.defaults, "rule": "isolated"}

    def __init__(self, model: nn.Module, initial_model: nn.Module | None = None, **options: Any):
        super().__init__(model, initial_model, **options)
        self.rule = self.options["rule"]
        if self.rule not in self.RULES:
            raise XWPError(f"rule must be one of {self.RULES}, got {self.rule!r}")

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """XWPc for one chunk of flat images ``x`` ``(B, D)``."""
        w = self.first.weight.detach()  # (H, D): trained
        logits = self.rest(self._first_layer(x, w))  # (B, C): the trained network, for target=None
        t = resolve_target(target, logits)  # (B,)
        h1_init = self._first_layer(x, self.w0)  # (B, H): first layer all initial
        delta = (w - self.w0).t().contiguous()  # (D, H): change of h1 when feature i gets W_i back
        initial = self._score_h1(h1_init, t)  # (B, k): sum_n I_n f_n^{W=W^0}(x)
        b_idx, i_idx, only_i = self._perturbed_scores(h1_init, delta, x, t)  # (N, k): ... f_n^{W=W^0, W_i=W_i}(x)
        attr = torch.zeros_like(x)  # (B, D)
        attr[b_idx, i_idx] = self._difference(only_i, initial[b_idx])  # R^c_i
        if self.rule == "eq5-literal":
            const = self._difference(self._score(logits, t), initial)  # (B,): C(x) = score f(x) - score f^{W=W^0}(x)
            attr = const[:, None] - attr
        return attr

"""XWP and XWPc: attribution by putting first-layer weights back to their initial values.

Lympelopoulos & Kanellopoulou, "From Weight Perturbation to Feature Attribution for
Explaining Fully Connected Neural Networks" (2026), eqs. 3-5. Both are two-term
differences of the target evidence ``score(f) = sum_n I_n f_n`` (eq. 4):

- XWP (eq. 3):  ``R_i   = score(f(x)) - score(f^{W_i = W_i^0}(x))``
- XWPc:         ``R^c_i = score(f^{W = W^0, W_i = W_i}(x)) - score(f^{W = W^0}(x))``

Swapping column ``i`` of a dense first layer changes its pre-activation by a rank-1 term,
``h1 + x_i * delta_i``, so every non-zero feature of every image goes through layers
2..L in one batched pass. A convolutional first layer (``nn.Conv2d``) reads "the weights of
pixel ``i``" as two convolutions with complementary masks,
``conv_W(x ⊙ (1 − e_i)) + conv_W0(x ⊙ e_i) + b = conv_W(x) + b + conv_{W0 − W}(x ⊙ e_i)``:
the same update, on the ``k x k`` patch of the first feature map that sees pixel ``i``
(:mod:`xwp.attribution.first_layer` has the definition and the index tables). One code path
serves both; the model is never modified.

:mod:`xwp.attribution.reference` has the literal definitions (copy the network, swap the
weights, rerun it) that these fast paths are tested against.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from xwp.attribution.common import Target, as_model_input, broadcast_target, indicator, output_fn, resolve_target
from xwp.attribution.first_layer import initial_first_weight, split_first_layer
from xwp.attribution.registry import Method, register
from xwp.devices import CHUNK_ELEMENTS, CHUNK_ELEMENTS_CUDA, run_chunked
from xwp.errors import XWPError

PAPER = "Lympelopoulos & Kanellopoulou 2026"


class _WeightPerturbation(Method):
    """Shared machinery of XWP and XWPc: the target evidence before and after a first-layer change of one feature."""

    defaults = {"output": "softmax", "chunk_elements": None, "image_chunk": 1024}

    def __init__(self, model: nn.Module, initial_model: nn.Module | None = None, **options: Any):
        super().__init__(model, **options)
        self.split = split_first_layer(model)  # Linear or Conv2d, and the layers after it
        self.first, self.rest = self.split.layer, self.split.rest
        self.w0 = initial_first_weight(model, self.split, initial_model)  # (H, D) or (C1, C, kh, kw)
        self._configure(self.options)

    def _configure(self, options: dict[str, Any]) -> None:
        """Read the bound options into attributes (the constructor's, or one call's with its overrides)."""
        self.options = options
        self.output = options["output"]
        self.out = output_fn(self.output)
        on_gpu = self.w0.device.type == "cuda"
        chunk = options["chunk_elements"] or (CHUNK_ELEMENTS_CUDA if on_gpu else CHUNK_ELEMENTS)
        self.chunk_elements = int(chunk)
        self.image_chunk = max(1, int(options["image_chunk"]))

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions shaped like ``inputs`` for ``target`` (int, ``(B,)`` or None: the predicted class).

        ``overrides`` change options for this call only (``output="logits"``, ``chunk_elements``...),
        checked like the constructor's. Images go through in chunks of ``image_chunk``, so the
        index and score arrays stay bounded however many images are given; only the result
        grows with the batch.
        """
        if overrides:
            call = copy.copy(self)  # the same model, W0 and first-layer split; other options
            call._configure(self.call_options(overrides))
            return call.attribute(inputs, target)
        x = as_model_input(inputs, self.model)
        b = x.shape[0]
        if target is not None:  # one entry per image; classes are checked per chunk
            target = broadcast_target(target, b, x.device)
        x = self.split.shape_inputs(x)  # (B, D) or (B, C, H, W)
        out = torch.empty(b, x[0].numel(), dtype=x.dtype, device=x.device)
        for start in range(0, b, self.image_chunk):
            stop = min(b, start + self.image_chunk)
            out[start:stop] = self._attribute(x[start:stop], None if target is None else target[start:stop])
        return out.reshape(inputs.shape).to(inputs.device)

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Attributions ``(b, D)`` of one chunk of images ``x`` ``(b, *in_shape)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the two terms

    def _first_layer(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """First pre-activation ``h1`` with the given first-layer weights: ``x W^T + b`` ``(B, H)`` or a conv map."""
        return self.split.pre(x, weight)  # (B, H) or (B, C1, Ho, Wo)

    def _score_h1(self, h1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:meth:`_score` of the network's output at pre-activations ``h1`` ``(B, H)``."""
        return self._score(self.rest(h1.clone()), target)  # rest() works in place

    def _perturbed_scores(
        self, h1: torch.Tensor, delta: torch.Tensor, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_score` at ``h1[b]`` + (feature ``i``'s change scaled by ``x[b, i]``) for every non-zero ``x[b, i]``.

        ``h1``: the unperturbed pre-activations (``(B, H)`` or ``(B, C1, Ho, Wo)``); ``delta``:
        the first layer's weight change in the layout of ``FirstLayer.per_unit`` (dense:
        ``(D, H)``, row ``i`` the change of ``h1`` per unit of ``x_i``); ``x``: the images
        ``(B, *in_shape)``. Returns the image and flat feature indices ``(N,)``, ``(N,)`` of the
        non-zero inputs and their scores ``(N, k)``.
        """
        flat = x.reshape(x.shape[0], -1)  # (B, D)
        b_idx, i_idx = torch.nonzero(flat, as_tuple=True)  # (N,), (N,)
        values = flat[b_idx, i_idx]  # (N,)
        scores = torch.empty(b_idx.numel(), self._score_width(), dtype=x.dtype, device=x.device)  # (N, k)
        chunk = max(1, self.chunk_elements // h1[0].numel())

        def work(start: int, stop: int) -> None:
            bi, ii = b_idx[start:stop], i_idx[start:stop]
            h = h1.index_select(0, bi)  # (n, ...): the unperturbed pre-activation of each row's image
            self.split.add_change(h, delta, ii, values[start:stop], tuple(x.shape[1:]))  # + x_i * change_i
            scores[start:stop] = self._score(self.rest(h), target.index_select(0, bi))

        run_chunked(b_idx.numel(), chunk, work)
        return b_idx, i_idx, scores

    # ------------------------------------------------------------------ the score of eq. 4, exactly

    def _score_width(self) -> int:
        """Columns ``k`` of :meth:`_score`: 2 for softmax (the complement trick's ``p_t``, ``q``), else 1."""
        return 2 if self.output == "softmax" else 1

    def _score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The evidence ``score = sum_n I_n out_n(logits)`` (eq. 4) per row, as the terms it is subtracted from.

        Softmax: :func:`complement_terms` (``p_t``, ``q = 1 - p_t``), ``(n, 2)``; logits or a
        callable output: the score itself, ``(n, 1)``. :meth:`_difference` subtracts two of them.
        """
        if self.output == "softmax":
            return complement_terms(logits, target)  # (n, 2)
        logit_t = logits.gather(1, target[:, None])  # (n, 1)
        if self.output == "logits":
            return 2.0 * logit_t - logits.sum(1, keepdim=True)  # (n, 1)
        return (self.out(logits) * indicator(target, logits.shape[1], logits.dtype)).sum(1, keepdim=True)  # (n, 1)

    @staticmethod
    def _difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``score(a) - score(b)`` ``(n,)`` from two :meth:`_score` values ``(n, k)``."""
        if a.shape[1] == 1:
            return a[:, 0] - b[:, 0]
        return complement_difference(a, b)


def complement_terms(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The complement trick, part 1: ``(p_t, q)`` per row ``(n, 2)``, with ``q = 1 - p_t`` computed on its own.

    The softmax evidence is ``sum_n I_n p_n = 2 p_t - 1 = 1 - 2 q``. For a confident prediction
    ``p_t`` rounds to 1 in float32 and a difference of two ``p_t`` loses every digit, while
    ``q`` (from the log-sum-exp of the other logits) keeps them. Both come from log-sum-exps.
    """
    logit_t = logits.gather(1, target[:, None])  # (n, 1)
    lse = torch.logsumexp(logits, 1, keepdim=True)  # (n, 1)
    others = torch.logsumexp(logits.scatter(1, target[:, None], -torch.inf), 1, keepdim=True)  # (n, 1)
    return torch.cat([torch.exp(logit_t - lse), torch.exp(others - lse)], 1)  # (n, 2): p_t, 1 - p_t


def complement_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The complement trick, part 2: ``score(a) - score(b)`` ``(n,)`` from two :func:`complement_terms`.

    Where both ``p_t > 0.5`` the difference is ``2 (q_b - q_a)`` (small ``q``: exact), else
    ``2 (p_a - p_b)``; both equal ``(2 p_a - 1) - (2 p_b - 1)`` in exact arithmetic.
    """
    confident = torch.minimum(a[:, 0], b[:, 0]) > 0.5
    return torch.where(confident, 2.0 * (b[:, 1] - a[:, 1]), 2.0 * (a[:, 0] - b[:, 0]))


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
        model: a network whose first layer is ``nn.Linear`` or ``nn.Conv2d`` (``xwp.MLP``,
            ``xwp.CNN``, or an ``nn.Sequential`` starting with (Flatten,) Linear or with
            Conv2d) returning logits.
        initial_model: the same architecture at its initial weights; optional for an
            ``xwp.MLP`` or ``xwp.CNN``, which keep their initial state.
        output: ``"softmax"`` (the paper), ``"logits"``, or a callable on logits.
        chunk_elements: bound on the size of the perturbed first-layer batch (default
            2**20 elements on a CPU, 2**26 on a GPU; halved on CUDA out-of-memory).
        image_chunk: images prepared together (bounds the index and score arrays).

    Features with ``x_i = 0`` get exactly 0. For a ``Conv2d`` first layer, "the weights of
    pixel ``i``" are the kernel applied to ``x ⊙ e_i``: the first layer becomes
    ``conv_W(x ⊙ (1 − e_i)) + conv_W0(x ⊙ e_i) + b`` (docs/cnn.md).
    """

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Eq. 3 for one chunk of images ``x`` ``(B, *in_shape)``; flat ``(B, D)`` out."""
        w = self.first.weight.detach()  # (H, D) or (C1, C, kh, kw): trained
        h1 = self._first_layer(x, w)  # (B, H) or (B, C1, Ho, Wo): the trained network's first pre-activation
        logits = self.rest(h1.clone())  # (B, C); rest() may work in place
        t = resolve_target(target, logits)  # (B,)
        delta = self.split.per_unit(self.w0 - w)  # change of h1 per unit of x_i when W_i -> W_i^0
        trained = self._score(logits, t)  # (B, k): sum_n I_n f_n(x)
        b_idx, i_idx, swapped = self._perturbed_scores(h1, delta, x, t)  # (N, k): sum_n I_n f_n^{W_i=W_i^0}(x)
        attr = x.new_zeros(x.shape[0], x[0].numel())  # (B, D)
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

    For a ``Conv2d`` first layer the first layer is ``conv_W0(x) + b + conv_{W − W0}(x ⊙ e_i)``,
    measured against ``conv_W0(x) + b`` (docs/cnn.md).

    Args: as :class:`XWP`, plus ``rule`` (``"isolated"`` or ``"eq5-literal"``).
    """

    RULES = ("isolated", "eq5-literal")
    defaults = {**_WeightPerturbation.defaults, "rule": "isolated"}

    def _configure(self, options: dict[str, Any]) -> None:
        """The shared options, and ``rule``."""
        super()._configure(options)
        self.rule = options["rule"]
        if self.rule not in self.RULES:
            raise XWPError(f"rule must be one of {self.RULES}, got {self.rule!r}")

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """XWPc for one chunk of images ``x`` ``(B, *in_shape)``; flat ``(B, D)`` out."""
        w = self.first.weight.detach()  # (H, D) or (C1, C, kh, kw): trained
        logits = self.rest(self._first_layer(x, w))  # (B, C): the trained network, for target=None
        t = resolve_target(target, logits)  # (B,)
        h1_init = self._first_layer(x, self.w0)  # (B, H) or (B, C1, Ho, Wo): first layer all initial
        delta = self.split.per_unit(w - self.w0)  # change of h1 when feature i gets W_i back
        initial = self._score_h1(h1_init, t)  # (B, k): sum_n I_n f_n^{W=W^0}(x)
        b_idx, i_idx, only_i = self._perturbed_scores(h1_init, delta, x, t)  # (N, k): ... f_n^{W=W^0, W_i=W_i}(x)
        attr = x.new_zeros(x.shape[0], x[0].numel())  # (B, D)
        attr[b_idx, i_idx] = self._difference(only_i, initial[b_idx])  # R^c_i
        if self.rule == "eq5-literal":
            const = self._difference(self._score(logits, t), initial)  # (B,): C(x) = score f(x) - score f^{W=W^0}(x)
            attr = const[:, None] - attr
        return attr

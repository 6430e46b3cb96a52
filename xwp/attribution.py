"""Attribution methods: XWP, XWPc, RISE and Captum-backed baselines, in one registry.

Every method follows Captum's contract: ``Method(model).attribute(inputs, target=...)``
returns a tensor shaped like ``inputs``. :data:`METHODS` maps a short name to a
:class:`MethodSpec`; the CLI, the app, the evaluation and the tests all read it, so a
method registered here shows up everywhere.

XWP and XWPc follow Lympelopoulos & Kanellopoulou, "From Weight Perturbation to Feature
Attribution for Explaining Fully Connected Neural Networks" (2026), eqs. 3-5; see the
class docstrings for the one place where we deviate from the printed eq. 5.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xwp.errors import XWPError
from xwp.first_layer import conv_split, initial_first_weight, weight_perturbation
from xwp.models import MLP

Target = int | torch.Tensor | list[int] | None
OutputFn = Callable[[torch.Tensor], torch.Tensor]

#: rows of the first hidden layer processed at once is ``CHUNK_ELEMENTS // width``: about 4 MB
#: of float32 on a CPU (cache-friendly), 256 MB on a GPU (fewer kernel launches)
CHUNK_ELEMENTS = 1 << 20
CHUNK_ELEMENTS_CUDA = 1 << 26


# --------------------------------------------------------------------------- helpers


def output_fn(output: str | OutputFn) -> OutputFn:
    """Map ``"softmax"``, ``"logits"`` or a callable on logits ``(N, C)`` to a callable."""
    if callable(output):
        return output
    if output == "softmax":
        return functools.partial(torch.softmax, dim=1)
    if output == "logits":
        return _identity
    raise XWPError(f"output must be 'softmax', 'logits' or a callable, got {output!r}")


def _identity(t: torch.Tensor) -> torch.Tensor:
    """Return ``t`` unchanged."""
    return t


class OutputModel(nn.Module):
    """``model`` followed by an output function (e.g. softmax), for Captum methods."""

    def __init__(self, model: nn.Module, output: str | OutputFn = "softmax"):
        super().__init__()
        self.model = model
        self.output = output
        self._fn = output_fn(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, C)``."""
        return self._fn(self.model(x))


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first parameter."""
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def broadcast_target(target: Target, batch: int, device: torch.device) -> torch.Tensor:
    """One long class index per image, ``(batch,)``; a single index is repeated."""
    t = torch.as_tensor(target, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise XWPError(f"target must be a class index, got dtype {t.dtype}")
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise XWPError(f"target has {t.numel()} entries for a batch of {batch}")
    return t


def resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Targets as a ``(B,)`` long tensor; ``None`` means the predicted class."""
    b, c = logits.shape
    if target is None:
        return logits.argmax(1)
    t = broadcast_target(target, b, logits.device)
    if ((t < 0) | (t >= c)).any():
        raise XWPError(f"target class {t[(t < 0) | (t >= c)][0].item()} is out of range 0..{c - 1}")
    return t.contiguous()


def indicator(target: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """The paper's eq. 4: ``I[b, n] = +1`` for the target class, ``-1`` for every other."""
    ind = torch.full((target.numel(), n_classes), -1.0, dtype=dtype, device=target.device)
    ind.scatter_(1, target[:, None], 1.0)
    return ind  # (B, C)


def run_chunked(n: int, chunk: int, fn: Callable[[int, int], None]) -> None:
    """Call ``fn(start, stop)`` over ``range(n)`` in chunks, halving them on CUDA out-of-memory."""
    start = 0
    while start < n:
        stop = min(n, start + chunk)
        try:
            fn(start, stop)
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            torch.cuda.empty_cache()
            continue
        start = stop


def _as_model_input(inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Validate ``inputs`` and move them to the model's device and dtype."""
    if not isinstance(inputs, torch.Tensor):
        raise XWPError(f"inputs must be a tensor, got {type(inputs).__name__}")
    if inputs.dim() < 2:
        raise XWPError(f"inputs must have a batch dimension, got shape {tuple(inputs.shape)}")
    return inputs.to(device=model_device(model), dtype=model_dtype(model))


# --------------------------------------------------------------------------- XWP / XWPc


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
        "XWP needs a network whose first layer is nn.Linear or nn.Conv2d: an xwp.MLP, an xwp.CNN, "
        "or an nn.Sequential that starts with (Flatten,) Linear or with Conv2d"
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


class _WeightPerturbation:
    """Shared machinery of XWP and XWPc: one rank-1 change of the first layer per feature."""

    def __init__(
        self,
        model: nn.Module,
        initial_model: nn.Module | None = None,
        output: str | OutputFn = "softmax",
        chunk_elements: int | None = None,
        image_chunk: int = 1024,
    ):
        self.model = model
        self.conv = conv_split(model)  # a convolutional first layer is handled by xwp.first_layer
        if self.conv is not None:
            self.first, self.rest = self.conv.layer, self.conv.rest
            self.w0 = initial_first_weight(model, self.conv, initial_model)  # (C1, C, k, k)
        else:
            self.first, self.rest = split_first_linear(model)
            self.w0 = _initial_first_weight(model, initial_model)  # (H, D)
        self.output = output
        self.out = output_fn(output)
        on_gpu = self.w0.device.type == "cuda"
        self.chunk_elements = int(chunk_elements or (CHUNK_ELEMENTS_CUDA if on_gpu else CHUNK_ELEMENTS))
        self.image_chunk = max(1, int(image_chunk))

    def _swap_scores(
        self, h1: torch.Tensor, x: torch.Tensor, delta_t: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score ``I . out(rest(h1[b] + x[b, i] * delta_t[i]))`` for every non-zero ``x[b, i]``.

        Returns the batch and feature indices of the non-zero inputs and their
        :meth:`_score_rows` values.
        """
        b_idx, i_idx = torch.nonzero(x, as_tuple=True)  # (N,), (N,)
        values = x[b_idx, i_idx]  # (N,)
        width = 2 if self.output == "softmax" else 1
        scores = torch.empty(b_idx.numel(), width, dtype=x.dtype, device=x.device)  # (N, k)
        chunk = max(1, self.chunk_elements // delta_t.shape[1])

        def work(start: int, stop: int) -> None:
            bi, ii = b_idx[start:stop], i_idx[start:stop]
            h = h1.index_select(0, bi)  # (n, H): the reference pre-activation of each row's image
            h.addcmul_(delta_t.index_select(0, ii), values[start:stop, None])  # + x_i (W'_i - W_i)
            scores[start:stop] = self._score_rows(self.rest(h), target.index_select(0, bi))

        run_chunked(b_idx.numel(), chunk, work)
        return b_idx, i_idx, scores

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Attributions shaped like ``inputs`` for ``target`` (int, ``(B,)`` or None: the predicted class).

        Images go through in chunks of ``image_chunk``, so the index and score arrays stay
        bounded however many images are given; only the result grows with the batch.
        """
        x = _as_model_input(inputs, self.model)
        b = x.shape[0]
        if target is not None:  # one entry per image; classes are checked per chunk
            target = broadcast_target(target, b, x.device)
        out = torch.empty(b, x[0].numel(), dtype=x.dtype, device=x.device)
        for start in range(0, b, self.image_chunk):
            stop = min(b, start + self.image_chunk)
            out[start:stop] = self._attribute(x[start:stop], None if target is None else target[start:stop])
        return out.reshape(inputs.shape).to(inputs.device)

    def _attribute(self, inputs: torch.Tensor, target: Target) -> torch.Tensor:
        """Attributions ``(b, D)`` of one chunk of images."""
        raise NotImplementedError

    def _conv_attribute(self, inputs: torch.Tensor, target: Target, complement: bool, literal: bool = False):
        """XWP / XWPc of one chunk of images for a convolutional first layer (:mod:`xwp.first_layer`)."""
        return weight_perturbation(
            self.conv, inputs, self.w0, target, self._score_rows, self._difference, run_chunked,
            complement=complement, chunk_elements=self.chunk_elements, literal=literal,
        )  # fmt: skip

    def _score_rows(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What ``sum_n I_n out_n(logits)`` (eq. 4) needs per row, as ``(n, k)``; see :meth:`_difference`.

        For softmax, ``sum_n I_n p_n = 2 p_t - 1 = 1 - 2 q`` with ``q = 1 - p_t``: both ``p_t``
        and ``q`` are kept, each computed from log-sum-exps, so that a confident prediction
        (``p_t`` within float32 rounding of 1) still gives exact differences through ``q``.
        """
        logit_t = logits.gather(1, target[:, None])  # (n, 1)
        if self.output == "softmax":
            lse = torch.logsumexp(logits, 1, keepdim=True)  # (n, 1)
            others = torch.logsumexp(logits.scatter(1, target[:, None], -torch.inf), 1, keepdim=True)
            return torch.cat([torch.exp(logit_t - lse), torch.exp(others - lse)], 1)  # (n, 2): p_t, 1 - p_t
        if self.output == "logits":
            return 2.0 * logit_t - logits.sum(1, keepdim=True)
        return (self.out(logits) * indicator(target, logits.shape[1], logits.dtype)).sum(1, keepdim=True)

    @staticmethod
    def _difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``score(a) - score(b)`` per row from :meth:`_score_rows` values."""
        if a.shape[1] == 1:
            return a[:, 0] - b[:, 0]
        confident = torch.minimum(a[:, 0], b[:, 0]) > 0.5  # differences of small q are exact there
        return torch.where(confident, 2.0 * (b[:, 1] - a[:, 1]), 2.0 * (a[:, 0] - b[:, 0]))

    def _score(self, h1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:meth:`_score_rows` of unperturbed pre-activations ``h1``."""
        return self._score_rows(self.rest(h1.clone()), target)  # rest() works in place

    def _prepare(self, inputs: torch.Tensor, target: Target):
        """Flatten inputs; the first pre-activation, the trained model's logits and the targets."""
        x_in = _as_model_input(inputs, self.model)
        x = x_in.reshape(x_in.shape[0], -1)  # (B, D)
        if x.shape[1] != self.first.in_features:
            raise XWPError(f"inputs have {x.shape[1]} features, the model expects {self.first.in_features}")
        w, b = self.first.weight.detach(), self.first.bias
        b = b.detach() if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        h1 = torch.addmm(b, x, w.t())  # (B, H)
        logits = self.rest(h1.clone())  # (B, C); rest() works in place
        return x, w, b, h1, logits, resolve_target(target, logits)


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

    The swap changes the first pre-activation by ``x_i (W0_i - W_i)``, so every
    non-zero feature of every image goes through layers 2..L in one batched pass;
    features with ``x_i = 0`` get exactly 0. The model is never modified.
    """

    def _attribute(self, inputs: torch.Tensor, target: Target) -> torch.Tensor:
        """XWP of one chunk of images, flat ``(b, D)``."""
        if self.conv is not None:
            return self._conv_attribute(inputs, target, complement=False)
        x, w, _, h1, logits, t = self._prepare(inputs, target)
        delta_t = (self.w0 - w).t().contiguous()  # (D, H): change of h1 per unit of x_i
        ref = self._score_rows(logits, t)  # (B,)
        b_idx, i_idx, pert = self._swap_scores(h1, x, delta_t, t)
        attr = torch.zeros_like(x)
        attr[b_idx, i_idx] = self._difference(ref[b_idx], pert)
        return attr


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

    def __init__(self, *args: Any, rule: str = "isolated", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if rule not in self.RULES:
            raise XWPError(f"rule must be one of {self.RULES}, got {rule!r}")
        self.rule = rule

    def _attribute(self, inputs: torch.Tensor, target: Target) -> torch.Tensor:
        """XWPc of one chunk of images, flat ``(b, D)``."""
        if self.conv is not None:
            return self._conv_attribute(inputs, target, complement=True, literal=self.rule == "eq5-literal")
        x, w, b, _, logits, t = self._prepare(inputs, target)
        h1_init = torch.addmm(b, x, self.w0.t())  # (B, H): first layer all initial
        delta_t = (w - self.w0).t().contiguous()  # (D, H): giving feature i its trained weights back
        base = self._score(h1_init, t)  # (B,)
        b_idx, i_idx, pert = self._swap_scores(h1_init, x, delta_t, t)
        attr = torch.zeros_like(x)
        attr[b_idx, i_idx] = self._difference(pert, base[b_idx])
        if self.rule == "eq5-literal":
            const = self._difference(self._score_rows(logits, t), base)  # C(x) = I . (f(x) - f^{W=W0}(x))
            attr = const[:, None] - attr
        return attr


# --------------------------------------------------------------------------- RISE


@functools.lru_cache(maxsize=8)
def rise_masks(
    n_masks: int, grid_size: int, p_keep: float, height: int, width: int, seed: int, device: str = "cpu"
) -> torch.Tensor:
    """RISE masks ``(N, H, W)``: random ``s x s`` binary grids, bilinearly upsampled, randomly shifted.

    Petsiuk et al. (2018): cell = ceil(H / s); each grid of keep-probability ``p`` is
    upsampled to ``(s + 1) * cell`` and cropped at a random offset in ``[0, cell)``.
    The result is cached and read-only.
    """
    gen = torch.Generator().manual_seed(seed)
    cell_h, cell_w = math.ceil(height / grid_size), math.ceil(width / grid_size)
    grid = (torch.rand(n_masks, 1, grid_size, grid_size, generator=gen) < p_keep).float()
    up = F.interpolate(grid, size=((grid_size + 1) * cell_h, (grid_size + 1) * cell_w), mode="bilinear")
    up = up[:, 0]  # (N, (s+1)ch, (s+1)cw)
    dy = torch.randint(0, cell_h, (n_masks,), generator=gen)
    dx = torch.randint(0, cell_w, (n_masks,), generator=gen)
    rows = dy[:, None] + torch.arange(height)  # (N, H)
    cols = dx[:, None] + torch.arange(width)  # (N, W)
    n = torch.arange(n_masks)[:, None, None]
    masks = up[n, rows[:, :, None], cols[:, None, :]]  # (N, H, W)
    return masks.to(device)


class RISE:
    """Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

    Saliency of class ``t`` at pixel ``j``: ``sum_k f_t(x * M_k) M_k[j] / (N p)`` over ``N``
    random masks ``M_k`` (:func:`rise_masks`). Batched: every image of the batch is
    multiplied by a chunk of masks and all go through the model in one pass.

    Args:
        model: any classifier returning logits for ``(B, ..., H, W)`` inputs.
        output: the score ``f``: ``"softmax"`` (default), ``"logits"`` or a callable.
    """

    def __init__(self, model: nn.Module, output: str | OutputFn = "softmax"):
        self.model = model
        self.out = output_fn(output)

    @torch.no_grad()
    def attribute(
        self,
        inputs: torch.Tensor,
        target: Target = None,
        n_masks: int = 2000,
        grid_size: int = 7,
        p_keep: float = 0.5,
        seed: int = 0,
        batch_rows: int = 8192,
    ) -> torch.Tensor:
        """Saliency maps shaped like ``inputs`` (masks span the last two dimensions)."""
        x = _as_model_input(inputs, self.model)
        if x.dim() == 2:  # flat square images
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise XWPError("RISE needs image-shaped inputs (B, ..., H, W)")
            x = x.reshape(x.shape[0], side, side)
        if not 0 < p_keep <= 1:
            raise XWPError(f"p_keep must be in (0, 1], got {p_keep}")
        bsz, (h, w) = x.shape[0], x.shape[-2:]
        masks = rise_masks(n_masks, grid_size, p_keep, h, w, seed, str(x.device)).to(x.dtype)  # (N, H, W)
        t = resolve_target(target, self.model(x))
        scores = torch.empty(bsz, n_masks, dtype=x.dtype, device=x.device)  # (B, N)
        per_chunk = max(1, batch_rows // bsz)
        mask_view = (n_masks,) + (1,) * (x.dim() - 3) + (h, w)

        def work(start: int, stop: int) -> None:
            m = masks[start:stop].reshape((stop - start,) + mask_view[1:])  # (n, ..., H, W)
            xm = x[:, None] * m[None]  # (B, n, ..., H, W)
            out = self.out(self.model(xm.reshape((-1,) + x.shape[1:])))  # (B*n, C)
            out = out.reshape(bsz, stop - start, -1)  # (B, n, C)
            scores[:, start:stop] = out.gather(2, t.view(bsz, 1, 1).expand(-1, stop - start, 1))[..., 0]

        run_chunked(n_masks, per_chunk, work)
        sal = scores @ masks.reshape(n_masks, -1) / (n_masks * p_keep)  # (B, H*W)
        sal = sal.reshape((bsz,) + (1,) * (x.dim() - 3) + (h, w)).expand(x.shape)  # channels share a map
        return sal.reshape(inputs.shape).to(inputs.device)


# --------------------------------------------------------------------------- baselines


class RandomAttribution:
    """Uniform random scores: the random-order baseline every method must beat."""

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None, seed: int = 0) -> torch.Tensor:
        """Random attributions shaped like ``inputs`` (target is ignored)."""
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(inputs.shape, generator=gen, dtype=torch.float64).to(inputs.dtype).to(inputs.device)


class CaptumMethod:
    """A Captum attribution method with our defaults, applied to logits or softmax scores.

    ``attribute(inputs, target, **overrides)`` calls ``captum_method.attribute`` with
    the registry's defaults updated by ``overrides``; stochastic methods are seeded.
    ``defaults["output"]`` says what is explained (``"softmax"``, ``"logits"`` or a callable);
    ``prepare(x, kwargs)`` turns our options into Captum's arguments for the inputs ``x``.
    """

    def __init__(
        self,
        model: nn.Module,
        captum_cls: type,
        defaults: dict[str, Any],
        copy_model: bool = False,
        prepare: Callable[[torch.Tensor, dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.defaults = dict(defaults)
        self.model = copy.deepcopy(model) if copy_model else model
        self.forward = OutputModel(self.model, self.defaults.pop("output")).eval()
        self.captum_cls = captum_cls
        self.prepare = prepare

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions shaped like ``inputs`` (in the model's dtype)."""
        x = _as_model_input(inputs, self.model)
        with torch.no_grad():
            t = resolve_target(target, self.model(x))
        kwargs = {**self.defaults, **overrides}
        seed = kwargs.pop("seed", 0)
        forward, x_run = self.forward, x
        compute = kwargs.pop("dtype", None)
        if compute not in (None, "float32", "float64"):
            raise XWPError(f"dtype must be None, 'float32' or 'float64', got {compute!r}")
        if compute is not None and getattr(torch, compute) != x.dtype:
            forward, x_run = self._converted(getattr(torch, compute)), x.to(getattr(torch, compute))
        if self.prepare is not None:
            kwargs = self.prepare(x_run, kwargs)
        attr = self._run(forward, x_run, t, kwargs, seed)
        return attr.detach().to(x.dtype).reshape(inputs.shape).to(inputs.device)

    def _converted(self, dtype: torch.dtype) -> OutputModel:
        """The scored model in another dtype (a private copy, made once)."""
        if getattr(self, "_copy_dtype", None) != dtype:
            self._copy = OutputModel(copy.deepcopy(self.model).to(dtype), self.forward.output).eval()
            self._copy_dtype = dtype
        return self._copy

    def _run(self, forward: nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any], seed: int):
        """Call Captum with seeded torch and numpy RNGs (both restored afterwards)."""
        method = self.captum_cls(forward)
        np_state = np.random.get_state()  # Captum's GradientShap draws from numpy's global RNG
        try:
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
                warnings.simplefilter("ignore")
                torch.manual_seed(seed)
                np.random.seed(seed)
                return method.attribute(x, target=t, **kwargs)
        finally:
            np.random.set_state(np_state)


def _window_kwargs(x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn Occlusion's ``window``/``stride`` ints into Captum's shape tuples for ``x``."""
    window, stride = kwargs.pop("window"), kwargs.pop("stride")
    lead = (1,) * (x.dim() - 3)
    spatial = 2 if x.dim() >= 3 else 1
    kwargs["sliding_window_shapes"] = lead + (window,) * spatial
    kwargs["strides"] = lead + (stride,) * spatial
    return kwargs


def superpixel_mask(x: torch.Tensor, size: int) -> torch.Tensor | None:
    """Feature mask grouping ``size x size`` pixel blocks (None for ``size == 1``)."""
    if size <= 1:
        return None
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device) // size
    cols = torch.arange(w, device=x.device) // size
    ids = rows[:, None] * math.ceil(w / size) + cols[None, :]  # (H, W)
    return ids.expand((1,) * (x.dim() - 2) + (h, w))


def _superpixel_kwargs(x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn a ``superpixel`` size into Captum's ``feature_mask`` for ``x``."""
    kwargs["feature_mask"] = superpixel_mask(x, kwargs.pop("superpixel"))
    return kwargs


def _gradientshap_kwargs(x: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Use an all-zero (background) baseline unless one is given."""
    if kwargs.get("baselines") is None:
        kwargs["baselines"] = torch.zeros((1,) + x.shape[1:], dtype=x.dtype, device=x.device)
    return kwargs


class LRPMethod(CaptumMethod):
    """Captum's LRP with an epsilon rule on every linear and conv layer, attached anew on each call.

    Captum drops custom rules after each call and writes state onto the layers, so the
    model is copied once and the rules are set before every call.
    """

    def __init__(self, model: nn.Module, defaults: dict[str, Any]):
        from captum.attr import LRP

        defaults = dict(defaults)
        self.epsilon = defaults.pop("epsilon")
        super().__init__(model, LRP, {**defaults, "output": "logits"}, copy_model=True)

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """LRP relevance shaped like ``inputs``."""
        from captum.attr._utils.lrp_rules import EpsilonRule

        eps = overrides.pop("epsilon", self.epsilon)
        for m in self.model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):  # max pooling keeps Captum's default rule
                m.rule = EpsilonRule(epsilon=eps)
        return super().attribute(inputs, target, **overrides)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MethodSpec:
    """One entry of :data:`METHODS`: how to build a method and what to tell users about it."""

    name: str
    label: str
    kind: str
    summary: str
    reference: str
    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    needs_initial: bool = False


METHODS: dict[str, MethodSpec] = {}


def register(
    name: str,
    label: str,
    kind: str,
    summary: str,
    reference: str,
    defaults: dict[str, Any] | None = None,
    needs_initial: bool = False,
):
    """Decorator that adds a builder ``build(model, initial_model, defaults) -> method`` to METHODS."""

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        METHODS[name] = MethodSpec(name, label, kind, summary, reference, build, dict(defaults or {}), needs_initial)
        return build

    return wrap


class _Bound:
    """A method with registry defaults bound to its ``attribute`` call."""

    def __init__(self, method: Any, defaults: dict[str, Any]):
        self.method = method
        self.defaults = defaults

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions shaped like ``inputs``."""
        return self.method.attribute(inputs, target=target, **{**self.defaults, **overrides})


@register(
    "xwp",
    "XWP",
    "weight perturbation",
    "First-layer weights of feature i back to their initial values; loss of target evidence.",
    "Lympelopoulos & Kanellopoulou 2026, eq. 3",
    {"output": "softmax"},
    needs_initial=True,
)
def _build_xwp(model, initial_model, options):
    """XWP with the registry's options."""
    return XWP(model, initial_model, **options)


@register(
    "xwpc",
    "XWPᶜ",
    "weight perturbation",
    "First layer at its initial values; only feature i gets its trained weights back.",
    "Lympelopoulos & Kanellopoulou 2026, eq. 5 (as described in the text)",
    {"output": "softmax", "rule": "isolated"},
    needs_initial=True,
)
def _build_xwpc(model, initial_model, options):
    """XWPc with the registry's options."""
    return XWPc(model, initial_model, **options)


@register(
    "occlusion",
    "Occlusion",
    "perturbation",
    "Set a window of pixels to 0 and measure the drop of the target probability.",
    "Zeiler & Fergus 2014; captum.attr.Occlusion",
    {"output": "softmax", "window": 1, "stride": 1, "baselines": 0.0, "perturbations_per_eval": 64, "dtype": "float64"},
)
def _build_occlusion(model, initial_model, options):
    """Captum Occlusion (window x window patches) on softmax scores, computed in float64.

    Occlusion differences softmax outputs: for a confident prediction (p within float32
    rounding of 1) they vanish in float32 and the map turns into rounding noise, which
    cost it half its deletion AUC on Fashion-MNIST (bench/study_checks.py).
    ``dtype=None`` runs it in the model's own dtype.
    """
    from captum.attr import Occlusion

    return CaptumMethod(model, Occlusion, options, prepare=_window_kwargs)


@register(
    "shapley",
    "Shapley",
    "perturbation",
    "Shapley values estimated from random feature permutations (zero baseline).",
    "Strumbelj & Kononenko 2010; captum.attr.ShapleyValueSampling",
    {
        "output": "softmax",
        "n_samples": 10,
        "superpixel": 1,
        "baselines": 0.0,
        "perturbations_per_eval": 64,
        "seed": 0,
        "dtype": None,
    },
)
def _build_shapley(model, initial_model, options):
    """Captum ShapleyValueSampling on softmax scores."""
    from captum.attr import ShapleyValueSampling

    return CaptumMethod(model, ShapleyValueSampling, options, prepare=_superpixel_kwargs)


@register(
    "kernelshap",
    "KernelSHAP",
    "perturbation",
    "Weighted linear regression on random coalitions of superpixels (Lundberg & Lee).",
    "Lundberg & Lee 2017; captum.attr.KernelShap",
    {
        "output": "softmax",
        "n_samples": 300,
        "superpixel": 2,
        "baselines": 0.0,
        "perturbations_per_eval": 300,
        "seed": 0,
    },
)
def _build_kernelshap(model, initial_model, options):
    """Captum KernelShap on softmax scores (needs scikit-learn)."""
    from captum.attr import KernelShap

    return CaptumMethod(model, KernelShap, options, prepare=_superpixel_kwargs)


@register(
    "rise",
    "RISE",
    "perturbation",
    "Average of random smooth masks weighted by the target probability they keep.",
    "Petsiuk, Das & Saenko 2018",
    {"output": "softmax", "n_masks": 2000, "grid_size": 7, "p_keep": 0.5, "seed": 0},
)
def _build_rise(model, initial_model, options):
    """RISE (implemented here; Captum has none)."""
    output = options.pop("output")
    return _Bound(RISE(model, output), options)


@register(
    "ig",
    "Integrated Gradients",
    "gradient",
    "Gradients integrated along the straight path from a black image to the input.",
    "Sundararajan, Taly & Yan 2017; captum.attr.IntegratedGradients",
    {"output": "softmax", "n_steps": 50, "baselines": 0.0, "internal_batch_size": 4096},
)
def _build_ig(model, initial_model, options):
    """Captum IntegratedGradients on softmax scores."""
    from captum.attr import IntegratedGradients

    return CaptumMethod(model, IntegratedGradients, options)


@register(
    "lrp",
    "LRP",
    "propagation",
    "Relevance propagated backwards from the target logit with the epsilon rule.",
    "Bach et al. 2015, Binder et al. 2016; captum.attr.LRP",
    {"epsilon": 1e-9},
)
def _build_lrp(model, initial_model, options):
    """Captum LRP on logits (Captum has no rule for softmax)."""
    return LRPMethod(model, options)


@register(
    "saliency",
    "Saliency",
    "gradient",
    "Absolute gradient of the target probability with respect to each pixel.",
    "Simonyan, Vedaldi & Zisserman 2013; captum.attr.Saliency",
    {"output": "softmax", "abs": True},
)
def _build_saliency(model, initial_model, options):
    """Captum Saliency on softmax scores."""
    from captum.attr import Saliency

    return CaptumMethod(model, Saliency, options)


@register(
    "deeplift",
    "DeepLIFT",
    "propagation",
    "Difference from a black reference propagated with the rescale rule.",
    "Shrikumar, Greenside & Kundaje 2017; captum.attr.DeepLift",
    {"output": "logits", "baselines": 0.0},
)
def _build_deeplift(model, initial_model, options):
    """Captum DeepLift on logits (its hooks live on a private copy of the model)."""
    from captum.attr import DeepLift

    return CaptumMethod(model, DeepLift, options, copy_model=True)


@register(
    "gradientshap",
    "GradientSHAP",
    "gradient",
    "Expected gradients on noisy points between a black baseline and the input.",
    "Lundberg & Lee 2017; captum.attr.GradientShap",
    {"output": "softmax", "n_samples": 50, "stdevs": 0.1, "baselines": None, "seed": 0},
)
def _build_gradientshap(model, initial_model, options):
    """Captum GradientShap on softmax scores."""
    from captum.attr import GradientShap

    return CaptumMethod(model, GradientShap, options, prepare=_gradientshap_kwargs)


@register("random", "Random", "baseline", "Uniform random scores: the order every method must beat.", "-", {"seed": 0})
def _build_random(model, initial_model, options):
    """Random scores."""
    return _Bound(RandomAttribution(), options)


def make_method(name: str, model: nn.Module, initial_model: nn.Module | None = None, **options: Any):
    """Build the registered method ``name`` for ``model`` with its defaults updated by ``options``.

    Returns an object with ``attribute(inputs, target=None, **overrides)``.
    """
    if name not in METHODS:
        raise XWPError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    spec = METHODS[name]
    unknown = set(options) - set(spec.defaults)
    if unknown:
        raise XWPError(
            f"{name} has no option {', '.join(sorted(unknown))}; its options: {', '.join(spec.defaults) or 'none'}"
        )
    merged = {**spec.defaults, **options}
    return spec.build(model, initial_model, merged)


def attribute(
    name: str,
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    initial_model: nn.Module | None = None,
    **options: Any,
) -> torch.Tensor:
    """One-call attribution: ``make_method(name, model, initial_model, **options).attribute(inputs, target)``."""
    return make_method(name, model, initial_model, **options).attribute(inputs, target=target)

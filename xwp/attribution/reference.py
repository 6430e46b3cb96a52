"""The definitions of XWP and XWPc, literally: swap the weights, rerun the whole network.

Lympelopoulos & Kanellopoulou 2026, eqs. 3-5. These are the slow, obviously correct versions
that the fast paths in :mod:`xwp.attribution.weight_perturbation` are tested against (in
float64, to ~1e-12), and that the bench times as the naive peer. One forward pass of the whole
network per input feature and image batch: use them on small inputs.

- :func:`xwp_reference` (eq. 3): ``R_i = score(f(x)) - score(f^{W_i = W_i^0}(x))``.
- :func:`xwpc_reference`: ``R^c_i = score(f^{W = W^0, W_i = W_i}(x)) - score(f^{W = W^0}(x))``;
  ``rule="eq5-literal"`` is the printed eq. 5 read literally, ``score(f(x)) - score(f^{W_{i'} =
  W_{i'}^0 for every i' != i}(x))``.

``score(out) = sum_n I_n out_n`` with ``I_n = +1`` for the target class and ``-1`` otherwise
(eq. 4); ``out`` is the softmax (the paper), the logits, or any callable on the logits.

A dense first layer's "weights of feature i" are column ``i`` of ``W``: the reference copies
the network and writes that column. A convolution shares its kernel over positions, so for a
``Conv2d`` first layer pixel ``i``'s weights are the kernel applied to ``x ⊙ e_i``: the first
layer's output becomes ``conv_A(x ⊙ (1 − e_i)) + conv_B(x ⊙ e_i) + b`` (a forward hook on a copy
puts it in place; docs/cnn.md). Nothing of the caller's model changes: the swaps happen on a
deep copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xwp.attribution.common import OutputFn, Target, as_model_input, resolve_target
from xwp.attribution.first_layer import initial_first_weight, split_first_layer
from xwp.errors import XWPError


def evidence(logits: torch.Tensor, target: torch.Tensor, output: OutputFn = "softmax") -> torch.Tensor:
    """``score = sum_n I_n out_n(logits)`` per row ``(B,)`` (eq. 4), computed plainly."""
    if output == "softmax":
        out = torch.softmax(logits, 1)
    elif output == "logits":
        out = logits
    elif callable(output):
        out = output(logits)
    else:
        raise XWPError(f"output must be 'softmax', 'logits' or a callable, got {output!r}")
    ind = -torch.ones_like(out)
    ind[torch.arange(len(target)), target] = 1.0
    return (out * ind).sum(1)


def _first_weight(copy_: nn.Module, model: nn.Module, layer: nn.Module) -> torch.Tensor:
    """In ``copy_`` (a deep copy of ``model``), the weight parameter that is ``layer.weight`` in ``model``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return dict(copy_.named_parameters())[names[id(layer.weight)]]


def _swap_runner(model: nn.Module, initial_model: nn.Module | None, complement: bool):
    """``run(x, i, swap)``: the network's logits with feature ``i``'s first-layer weights swapped (or none).

    ``complement`` False: the trained network, feature ``i`` at ``W^0`` (eq. 3).
    ``complement`` True: the first layer at ``W^0``, feature ``i`` at its trained weights.
    """
    split = split_first_layer(model)
    layer = split.layer
    w = layer.weight.detach()
    w0 = initial_first_weight(model, split, initial_model)
    base_w, swap_w = (w0, w) if complement else (w, w0)
    net = copy.deepcopy(model)
    weight = _first_weight(net, model, layer)
    if isinstance(layer, nn.Linear):

        def run(x: torch.Tensor, i: int | None) -> torch.Tensor:
            with torch.no_grad():
                weight.copy_(base_w)
                if i is not None:
                    weight[:, i] = swap_w[:, i]  # column i: the weights attached to feature i
                return net(x)

        return run, split
    if isinstance(layer, nn.Conv2d):
        conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight is weight)
        state: dict[str, int | None] = {"i": None}

        def conv_with(inp: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return F.conv2d(inp, kernel, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

        def hook(module: nn.Module, args: tuple, _out: torch.Tensor) -> torch.Tensor:
            (inp,) = args
            i = state["i"]
            if i is None:
                return conv_with(inp, base_w, module.bias)
            e = torch.zeros(inp[0].numel(), dtype=inp.dtype, device=inp.device)
            e[i] = 1.0
            e = e.reshape(inp.shape[1:])  # one-hot at input element i (channel and position)
            return conv_with(inp * (1 - e), base_w, module.bias) + conv_with(inp * e, swap_w, None)

        conv.register_forward_hook(hook)

        def run(x: torch.Tensor, i: int | None) -> torch.Tensor:
            state["i"] = i
            with torch.no_grad():
                return net(x)

        return run, split
    raise XWPError(f"the reference knows dense and Conv2d first layers, not {type(layer).__name__}")


def _loop(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    initial_model: nn.Module | None,
    output: OutputFn,
    complement: bool,
    term: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``term(trained, base, swapped_i)`` for every feature ``i``, as a map shaped like ``inputs``."""
    x = as_model_input(inputs, model)
    run, split = _swap_runner(model, initial_model, complement)
    xs = split.shape_inputs(x)
    with torch.no_grad():
        trained_logits = model(x)
    t = resolve_target(target, trained_logits)
    trained = evidence(trained_logits, t, output)
    base = evidence(run(x, None), t, output)
    flat = xs.reshape(xs.shape[0], -1)  # (B, D)
    # a feature that is 0 in every image changes nothing when its weights change: the swapped
    # network is the base network, so its entry is term(trained, base, base) without a rerun
    attr = term(trained, base, base)[:, None].expand_as(flat).clone()  # (B, D)
    for i in torch.nonzero(flat.ne(0).any(0)).flatten().tolist():
        attr[:, i] = term(trained, base, evidence(run(x, i), t, output))
    return attr.reshape(inputs.shape).to(inputs.device)


def xwp_reference(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    initial_model: nn.Module | None = None,
    output: OutputFn = "softmax",
) -> torch.Tensor:
    """XWP by definition (eq. 3): for each feature, put its first-layer weights back to ``W^0`` and rerun.

    Args: as :class:`xwp.XWP` (``target`` None: the predicted class). Returns a map shaped like
    ``inputs``.
    """
    return _loop(model, inputs, target, initial_model, output, False, lambda full, base, swapped: full - swapped)


def xwpc_reference(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    initial_model: nn.Module | None = None,
    output: OutputFn = "softmax",
    rule: str = "isolated",
) -> torch.Tensor:
    """XWPc by definition: first layer at ``W^0``, give feature ``i`` its trained weights back, rerun.

    ``rule="isolated"`` (what xwp computes): ``score(f^{W=W^0, W_i=W_i}) - score(f^{W=W^0})``.
    ``rule="eq5-literal"``: the printed eq. 5, ``score(f(x)) - score(f^{W_{i'}=W_{i'}^0, i' != i}(x))``,
    where "every feature but ``i`` initial" is the same network as "only ``i`` trained".
    """
    if rule == "isolated":
        return _loop(model, inputs, target, initial_model, output, True, lambda full, base, only_i: only_i - base)
    if rule == "eq5-literal":
        return _loop(model, inputs, target, initial_model, output, True, lambda full, base, only_i: full - only_i)
    raise XWPError(f"rule must be 'isolated' or 'eq5-literal', got {rule!r}")

"""A feed-forward network as a flat list of layers, checked against the model's own forward.

Pathwise explanations (Lim et al., AISTATS 2024) and activation-deactivation (Chanchal,
Kelly & Chockler 2025) replace or wrap individual layers, so both need the network as one
sequence of modules, as the official Pathwise code does (it rebuilds the model as one
``nn.Sequential``). :func:`unroll` takes the leaf modules in registration order, inserts a
flatten before the first ``nn.Linear`` that receives a map, and accepts the list only if it
reproduces ``model(inputs)``; anything else gets an :class:`~xwp.errors.XWPError` saying why.
"""

from __future__ import annotations

import torch
from torch import nn

from xwp.errors import XWPError

#: layers a sequence may contain (eval mode: dropout is the identity, batch norm is affine)
SUPPORTED = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Identity,
)


class AutoFlatten(nn.Module):
    """Flatten everything after the batch dimension (inserted before a Linear that receives maps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x.reshape(B, -1)``."""
        return x.reshape(x.shape[0], -1)


def leaf_layers(model: nn.Module) -> list[nn.Module]:
    """The modules without children, in registration order; unsupported ones raise XWPError."""
    leaves = [m for m in model.modules() if not list(m.children())]
    bad = sorted({type(m).__name__ for m in leaves if not isinstance(m, SUPPORTED)})
    if bad:
        raise XWPError(
            f"this method handles networks built from Linear, Conv, ReLU, pooling, Flatten, Dropout and "
            f"BatchNorm layers; the model has {', '.join(bad)}"
        )
    return leaves


def check_layers(model: nn.Module, need_relu: bool = True) -> list[nn.Module]:
    """The leaf layers, if all are supported and (when ``need_relu``) one is an ``nn.ReLU``; else XWPError."""
    leaves = leaf_layers(model)
    if need_relu and not any(isinstance(m, nn.ReLU) for m in leaves):
        raise XWPError("this method explains ReLU networks (nn.ReLU modules); the model has none")
    return leaves


def run_layers(layers: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply ``layers`` in turn, flattening before a Linear that receives more than ``(B, features)``."""
    for layer in layers:
        if isinstance(layer, nn.Linear) and x.dim() > 2:
            x = x.reshape(x.shape[0], -1)
        x = layer(x)
    return x


def unroll(model: nn.Module, inputs: torch.Tensor, need_relu: bool = True) -> list[nn.Module]:
    """The model as a flat list of layers (Linear gets an explicit flatten), checked on ``inputs``.

    Raises XWPError if the model has no ReLU (when ``need_relu``) or the leaf layers applied in
    order do not give ``model(inputs)`` (a model with skip connections or functional activations).
    """
    leaves = check_layers(model, need_relu)
    if any(m.training for m in leaves if isinstance(m, nn.Dropout | nn.BatchNorm1d | nn.BatchNorm2d)):
        raise XWPError("put the model in eval mode first (model.eval()): dropout or batch norm is in training mode")
    layers: list[nn.Module] = []
    shape_dims = inputs.dim()
    for m in leaves:
        if isinstance(m, nn.Linear) and shape_dims > 2:
            layers.append(AutoFlatten())
            shape_dims = 2
        elif isinstance(m, nn.Flatten):
            shape_dims = 2
        layers.append(m)
    with torch.no_grad():
        x = inputs[:2]
        want, got = model(x), run_layers(layers, x)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise XWPError(
            "this method needs a plain feed-forward network (its layers applied one after another); "
            "running the model's layers in order does not reproduce its output"
        )
    return layers

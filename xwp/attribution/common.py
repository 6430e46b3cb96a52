"""What every attribution method shares: targets, output functions, the paper's indicator, input checks."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from xwp.devices import model_device, model_dtype
from xwp.errors import XWPError
from xwp.models import KeepsInitial

Target = int | torch.Tensor | list[int] | None
OutputFn = Callable[[torch.Tensor], torch.Tensor]


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


_STOCHASTIC = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def as_model_input(inputs: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Validate ``inputs`` and move them to the model's device and dtype.

    Refused with :class:`XWPError`: non-tensors, no batch dimension, an empty batch,
    non-floating dtypes (integer images 0-255 would silently be read on the wrong scale),
    NaN or infinite values, a per-image size other than an ``xwp.MLP``'s or ``xwp.CNN``'s input size, and
    models in training mode that hold dropout or batch-norm layers (their output would be
    random or batch-dependent; call ``model.eval()`` first). An ``xwp.MLP`` in training mode
    is accepted: it computes the same function in both modes.
    """
    if not isinstance(inputs, torch.Tensor):
        raise XWPError(f"inputs must be a tensor, got {type(inputs).__name__}")
    if inputs.dim() < 2:
        raise XWPError(f"inputs must have a batch dimension, got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise XWPError("inputs hold no images (the batch is empty)")
    if not inputs.is_floating_point():
        raise XWPError(f"inputs must be floating point images in [0, 1], got dtype {inputs.dtype}")
    if isinstance(model, KeepsInitial) and inputs[0].numel() != model.n_inputs:
        raise XWPError(
            f"each input must have {model.n_inputs} features for {model.describe()}, got shape {tuple(inputs.shape)}"
        )
    if not torch.isfinite(inputs).all():
        raise XWPError("inputs contain NaN or infinite values")
    if model.training and any(isinstance(m, _STOCHASTIC) for m in model.modules()):
        raise XWPError("the model is in training mode and has dropout or batch-norm layers: call model.eval() first")
    return inputs.to(device=model_device(model), dtype=model_dtype(model))

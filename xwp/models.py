"""Fully connected networks that keep their state at initialisation.

XWP compares a trained network with the same network at initialisation, so the
initial parameters travel with the model as buffers: they move with ``.to()``,
are saved by :mod:`xwp.checkpoint` and are never touched by an optimizer.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import skip_init

from xwp.config import LIMITS
from xwp.errors import XWPError

INITS = ("torch", "kaiming")


def parse_hidden(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse hidden sizes such as ``"400,100"`` (an empty string means no hidden layer)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
        try:
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise XWPError(f"hidden sizes must be whole numbers separated by commas, got {text!r}") from None
    else:
        sizes = tuple(int(s) for s in text)
    return sizes


def check_seed(seed: object) -> int:
    """A seed as an int in 0..2**63-1 (ints and numpy ints; floats, texts and bools are refused)."""
    try:
        value = operator.index(seed)
    except TypeError:
        value = -1
    if isinstance(seed, bool) or not 0 <= value <= 2**63 - 1:
        raise XWPError(f"the seed must be a whole number in 0..2**63-1, got {str(seed)[:40]!r}")
    return value


def check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Validate layer sizes (input, hidden..., output) against :data:`xwp.config.LIMITS`."""
    max_width = LIMITS.max_hidden_width
    try:
        values = list(sizes)
    except TypeError:
        raise XWPError(f"layer sizes must be a list of whole numbers, got {type(sizes).__name__}") from None
    if not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in values):
        raise XWPError(f"layer sizes must be whole numbers, got {str(values)[:80]}")
    sizes = tuple(int(s) for s in values)
    if len(sizes) < 2:
        raise XWPError("an MLP needs at least an input and an output size")
    bad = [s for s in sizes if s < 1]
    if bad:
        raise XWPError(f"layer sizes must be at least 1, got {list(sizes)}")
    wide = [s for s in sizes[1:-1] if s > max_width]
    if wide:
        raise XWPError(f"hidden layers are limited to {max_width} units (XWP_MAX_HIDDEN_WIDTH), got {wide}")
    if len(sizes) - 2 > LIMITS.max_hidden_layers:
        raise XWPError(
            f"at most {LIMITS.max_hidden_layers} hidden layers (XWP_MAX_HIDDEN_LAYERS), got {len(sizes) - 2}"
        )
    return sizes


class MLP(nn.Module):
    """ReLU multilayer perceptron that remembers its initial parameters.

    Args:
        sizes: input size, hidden sizes..., number of classes; the paper uses
            ``(784, 400, 100, 10)``. One hidden layer or none at all is fine.
        seed: seed of the initialisation (the global RNG is left untouched).
        init: ``"torch"`` (PyTorch's default ``nn.Linear`` init) or
            ``"kaiming"`` (He-normal weights, zero biases).

    ``forward`` flattens its input, so ``(B, 1, 28, 28)`` and ``(B, 784)`` both
    work, and returns logits (``(B, classes)``); apply softmax where
    probabilities are needed. Every ReLU is its own module and there is no
    ``nn.Flatten``, so Captum's LRP finds a rule for every layer.
    """

    def __init__(self, sizes: Sequence[int] = (784, 400, 100, 10), seed: int = 0, init: str = "torch"):
        super().__init__()
        if init not in INITS:
            raise XWPError(f"init must be one of {INITS}, got {init!r}")
        self.sizes = check_sizes(sizes)
        layers: list[nn.Module] = []
        for k, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            if k:
                layers.append(nn.ReLU())
            layers.append(skip_init(nn.Linear, n_in, n_out))  # reset_parameters() draws the weights, once
        self.net = nn.Sequential(*layers)
        self.reset_parameters(seed, init)  # sets self.seed and self.init

    @property
    def linears(self) -> list[nn.Linear]:
        """The linear layers, first to last."""
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def reset_parameters(self, seed: int, init: str = "torch") -> None:
        """Re-initialise every layer from ``seed`` and store that state as the initial one."""
        seed = check_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.linears:
                if init == "kaiming":
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
                else:
                    layer.reset_parameters()
        self.seed, self.init = int(seed), init
        for name, p in self.net.named_parameters():
            self.register_buffer(_initial_name(name), p.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of inputs of any shape ``(B, ...)`` with ``sizes[0]`` values each."""
        return self.net(x.reshape(x.shape[0], -1))  # (B, C)

    def initial_state(self) -> dict[str, torch.Tensor]:
        """The parameters at initialisation, keyed like ``self.net.state_dict()``."""
        return {name: getattr(self, _initial_name(name)) for name, _ in self.net.named_parameters()}

    def set_initial_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the stored initial parameters (used when loading checkpoints)."""
        for name, p in self.net.named_parameters():
            if name not in state:
                raise XWPError(f"initial state is missing {name!r}")
            t = state[name]
            if tuple(t.shape) != tuple(p.shape):
                raise XWPError(f"initial {name} has shape {tuple(t.shape)}, expected {tuple(p.shape)}")
            getattr(self, _initial_name(name)).copy_(t)

    def initial_model(self) -> MLP:
        """A copy of this network with its parameters set to the initial state (eval mode)."""
        other = copy.deepcopy(self)
        with torch.no_grad():
            for name, p in other.net.named_parameters():
                p.copy_(getattr(other, _initial_name(name)))
        return other.eval()

    def describe(self) -> str:
        """Architecture in the paper's notation, e.g. ``784-400-100-10``."""
        return "-".join(str(s) for s in self.sizes)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(math.prod(p.shape) for p in self.parameters())


def _initial_name(param_name: str) -> str:
    """Buffer name for the initial value of a parameter (``net.0.weight`` -> ``initial_0_weight``)."""
    return "initial_" + param_name.replace(".", "_")

"""Networks that keep their state at initialisation: fully connected (MLP) and convolutional (CNN).

XWP compares a trained network with the same network at initialisation, so the
initial parameters travel with the model as buffers: they move with ``.to()``,
are saved by :mod:`xwp.checkpoint` and are never touched by an optimizer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

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


def check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Validate layer sizes (input, hidden..., output) against :data:`xwp.config.LIMITS`."""
    max_width = LIMITS.max_hidden_width
    sizes = tuple(int(s) for s in sizes)
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


class KeepsInitial(nn.Module):
    """Base of xwp's networks: ``self.net`` holds the layers, buffers hold their initial values."""

    net: nn.Sequential

    def _store_initial(self) -> None:
        """Copy the current parameters into the ``initial_*`` buffers."""
        for name, p in self.net.named_parameters():
            self.register_buffer(_initial_name(name), p.detach().clone())

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

    def initial_model(self) -> KeepsInitial:
        """A copy of this network with its parameters set to the initial state (eval mode)."""
        other = copy.deepcopy(self)
        with torch.no_grad():
            for name, p in other.net.named_parameters():
                p.copy_(getattr(other, _initial_name(name)))
        return other.eval()

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(math.prod(p.shape) for p in self.parameters())


class MLP(KeepsInitial):
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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.linears:
                if init == "kaiming":
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
                else:
                    layer.reset_parameters()
        self.seed, self.init = int(seed), init
        self._store_initial()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of inputs of any shape ``(B, ...)`` with ``sizes[0]`` values each."""
        return self.net(x.reshape(x.shape[0], -1))  # (B, C)

    def describe(self) -> str:
        """Architecture in the paper's notation, e.g. ``784-400-100-10``."""
        return "-".join(str(s) for s in self.sizes)

    @property
    def n_classes(self) -> int:
        """Number of outputs."""
        return self.sizes[-1]

    def arch(self) -> dict[str, Any]:
        """JSON-friendly architecture, as recorded in checkpoints (:func:`build_model` rebuilds it)."""
        return {"arch": "mlp", "sizes": list(self.sizes)}


CNN_MAX_BLOCKS = 4
CNN_MAX_CHANNELS = 512
CNN_MAX_IN_CHANNELS = 4
CNN_MAX_KERNEL = 15
CNN_MAX_IMAGE = 256
CNN_MAX_PARAMETERS = 50_000_000
MLP_MAX_PARAMETERS = 200_000_000  # what a checkpoint may ask for (800 MB of float32)


def _whole(value: Any, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (bools, floats and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise XWPError(f"{what} must be a whole number, got {value!r:.40}")
    if not low <= value <= high:
        raise XWPError(f"{what} must be between {low} and {high}, got {value}")
    return int(value)


def _whole_list(value: Any, what: str, low: int, high: int, max_len: int, min_len: int = 0) -> tuple[int, ...]:
    """A list of ints, each in ``[low, high]``, of length ``min_len..max_len``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not min_len <= len(value) <= max_len:
        raise XWPError(f"{what} must be a list of {min_len} to {max_len} whole numbers, got {value!r:.60}")
    return tuple(_whole(v, what, low, high) for v in value)


def cnn_shapes(
    channels: Sequence[int], kernel: int, padding: int, in_channels: int, image_size: int
) -> list[tuple[int, int]]:
    """Spatial size after each conv and each pool, validated (every map keeps at least 1x1)."""
    side, out = image_size, []
    for k in range(len(channels)):
        conv = side + 2 * padding - kernel + 1
        if conv < 2:
            raise XWPError(
                f"block {k + 1}: a {kernel}x{kernel} convolution with padding {padding} on a {side}x{side} map "
                "leaves less than 2x2 for the 2x2 pooling; use fewer blocks, a smaller kernel or more padding"
            )
        side = conv // 2
        out.append((conv, side))
    return out


class CNN(KeepsInitial):
    """Small convolutional network that remembers its initial parameters.

    ``[Conv2d(k x k, padding) -> ReLU -> MaxPool2d(2)] x len(channels)`` then a ReLU dense
    head ``hidden... -> n_classes``. The first layer is the ``nn.Conv2d`` that
    :class:`xwp.XWP` perturbs (see :mod:`xwp.first_layer` for the convolutional definition).

    Args:
        channels: output channels of each conv block (1 to 4 blocks).
        kernel: square kernel size of every conv; ``padding`` defaults to ``kernel // 2``.
        hidden: sizes of the dense head's hidden layers (empty: conv features -> classes).
        n_classes: number of outputs.
        in_channels, image_size: inputs are ``(B, in_channels, image_size, image_size)``;
            flat ``(B, in_channels * image_size**2)`` inputs are reshaped.
        seed, init: as :class:`MLP` (the global RNG is left untouched; one draw per weight).

    No ``nn.Flatten`` module (``forward`` reshapes), every ReLU is its own module, so
    Captum's LRP finds a rule for every layer.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32),
        kernel: int = 3,
        hidden: Sequence[int] = (128,),
        n_classes: int = 10,
        padding: int | None = None,
        in_channels: int = 1,
        image_size: int = 28,
        seed: int = 0,
        init: str = "torch",
    ):
        super().__init__()
        if init not in INITS:
            raise XWPError(f"init must be one of {INITS}, got {init!r}")
        self.kernel = _whole(kernel, "kernel", 1, CNN_MAX_KERNEL)
        self.padding = _whole(self.kernel // 2 if padding is None else padding, "padding", 0, self.kernel - 1)
        self.channels = _whole_list(list(channels), "channels", 1, CNN_MAX_CHANNELS, CNN_MAX_BLOCKS, 1)
        self.hidden = _whole_list(list(hidden), "hidden", 1, LIMITS.max_hidden_width, LIMITS.max_hidden_layers)
        self.n_classes = _whole(n_classes, "n_classes", 1, LIMITS.max_hidden_width)
        self.in_channels = _whole(in_channels, "in_channels", 1, CNN_MAX_IN_CHANNELS)
        self.image_size = _whole(image_size, "image_size", 1, CNN_MAX_IMAGE)
        side = cnn_shapes(self.channels, self.kernel, self.padding, self.in_channels, self.image_size)[-1][1]
        dense = (self.channels[-1] * side * side, *self.hidden, self.n_classes)
        convs = zip((self.in_channels, *self.channels[:-1]), self.channels, strict=True)
        n_params = sum(o * (i * self.kernel**2 + 1) for i, o in convs)
        n_params += sum(o * (i + 1) for i, o in zip(dense[:-1], dense[1:], strict=True))
        if n_params > CNN_MAX_PARAMETERS:
            raise XWPError(f"this CNN would have {n_params:,} parameters; the limit is {CNN_MAX_PARAMETERS:,}")
        layers: list[nn.Module] = []
        for c_in, c_out in zip((self.in_channels, *self.channels[:-1]), self.channels, strict=True):
            conv = skip_init(nn.Conv2d, c_in, c_out, self.kernel, padding=self.padding)
            layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
        self.n_conv_layers = len(layers)  # layers before the dense head
        for k, (n_in, n_out) in enumerate(zip(dense[:-1], dense[1:], strict=True)):
            if k:
                layers.append(nn.ReLU())
            layers.append(skip_init(nn.Linear, n_in, n_out))  # reset_parameters() draws the weights, once
        self.net = nn.Sequential(*layers)
        self.reset_parameters(seed, init)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input image, ``(channels, height, width)``."""
        return (self.in_channels, self.image_size, self.image_size)

    def reset_parameters(self, seed: int, init: str = "torch") -> None:
        """Re-initialise every layer from ``seed`` and store that state as the initial one."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.net:
                if not isinstance(layer, nn.Linear | nn.Conv2d):
                    continue
                if init == "kaiming":
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
                else:
                    layer.reset_parameters()
        self.seed, self.init = int(seed), init
        self._store_initial()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for ``(B, C, H, W)`` inputs (or flat ``(B, C*H*W)``)."""
        h = self.net[0](x.reshape((x.shape[0], *self.input_shape)))
        return self.after_first(h)

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """Every layer after the first convolution, applied to its output ``h`` (B, C1, H1, W1)."""
        for layer in self.net[1 : self.n_conv_layers]:
            h = layer(h)
        h = h.reshape(h.shape[0], -1)
        for layer in self.net[self.n_conv_layers :]:
            h = layer(h)
        return h

    def describe(self) -> str:
        """Architecture in short, e.g. ``cnn 1x28x28 c16-c32 k3 p1 | 128-10``."""
        convs = "-".join(f"c{c}" for c in self.channels)
        head = "-".join(str(s) for s in (*self.hidden, self.n_classes))
        size = f"{self.in_channels}x{self.image_size}x{self.image_size}"
        return f"cnn {size} {convs} k{self.kernel} p{self.padding} | {head}"

    def arch(self) -> dict[str, Any]:
        """JSON-friendly architecture, as recorded in checkpoints (:func:`build_model` rebuilds it)."""
        return {
            "arch": "cnn",
            "channels": list(self.channels),
            "kernel": self.kernel,
            "padding": self.padding,
            "hidden": list(self.hidden),
            "n_classes": self.n_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }


ARCHS = ("mlp", "cnn")


def build_model(arch: Any, seed: Any = 0, init: Any = "torch") -> MLP | CNN:
    """Rebuild a network from :meth:`MLP.arch` / :meth:`CNN.arch` metadata, validating every size.

    Other keys of ``arch`` are ignored, so a checkpoint's whole metadata can be passed.
    Untrusted input (a checkpoint's JSON): anything malformed or over the limits raises
    :class:`~xwp.errors.XWPError`. A dict without ``"arch"`` but with ``"sizes"`` is an MLP
    (checkpoints written before CNNs existed).
    """
    if not isinstance(arch, dict):
        raise XWPError("the architecture must be a JSON object")
    kind = arch.get("arch", "mlp")
    seed = _whole(seed, "seed", -(2**63), 2**63 - 1)
    if init not in INITS:
        raise XWPError(f"init must be one of {INITS}, got {init!r:.40}")
    if kind == "mlp":
        sizes = arch.get("sizes")
        if not isinstance(sizes, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
            raise XWPError(f"MLP sizes must be a list of whole numbers, got {sizes!r:.60}")
        check_sizes(sizes)
        if sizes[0] > CNN_MAX_IN_CHANNELS * CNN_MAX_IMAGE**2 or sizes[-1] > LIMITS.max_hidden_width:
            raise XWPError(f"MLP input or output size is over the limits: {sizes[0]}, {sizes[-1]}")
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        if n_params > MLP_MAX_PARAMETERS:
            raise XWPError(f"this MLP would have {n_params:,} parameters; the limit is {MLP_MAX_PARAMETERS:,}")
        return MLP(sizes, seed=seed, init=init)
    if kind == "cnn":
        keys = {"channels", "kernel", "padding", "hidden", "n_classes", "in_channels", "image_size"}
        if not keys <= set(arch):
            raise XWPError(
                f"a CNN architecture needs {', '.join(sorted(keys))}; {', '.join(sorted(keys - set(arch)))} missing"
            )
        if not isinstance(arch["channels"], list) or not isinstance(arch["hidden"], list):
            raise XWPError("CNN channels and hidden must be lists of whole numbers")
        return CNN(**{k: arch[k] for k in keys}, seed=seed, init=init)
    raise XWPError(f"unknown architecture {kind!r:.40}; xwp knows {', '.join(ARCHS)}")


def _initial_name(param_name: str) -> str:
    """Buffer name for the initial value of a parameter (``net.0.weight`` -> ``initial_0_weight``)."""
    return "initial_" + param_name.replace(".", "_")

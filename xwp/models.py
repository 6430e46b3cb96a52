"""Networks that keep their state at initialisation: fully connected (MLP) and convolutional (CNN).

XWP compares a trained network with the same network at initialisation, so the
initial parameters travel with the model as buffers: they move with ``.to()``,
are saved by :mod:`xwp.checkpoint` and are never touched by an optimizer.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Sequence
from typing import Any

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

    family: str = ""
    """``"mlp"`` or ``"cnn"``: the network family, as recorded in checkpoints."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (``(D,)`` for an MLP, ``(C, H, W)`` for a CNN)."""
        raise NotImplementedError

    @property
    def n_inputs(self) -> int:
        """Input values per image."""
        return math.prod(self.input_shape)

    def first_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's weights at initialisation and now, detached (``(H, D)`` or ``(C1, C, k, k)``)."""
        return self.initial_state()["0.weight"].detach(), self.net[0].weight.detach()


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
        self._store_initial()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of inputs of any shape ``(B, ...)`` with ``sizes[0]`` values each."""
        return self.net(x.reshape(x.shape[0], -1))  # (B, C)

    family = "mlp"

    def describe(self) -> str:
        """Architecture in the paper's notation, e.g. ``784-400-100-10``."""
        return "-".join(str(s) for s in self.sizes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one (flat) input, ``(sizes[0],)``; ``forward`` flattens images."""
        return (self.sizes[0],)

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


def cnn_spec(
    channels: Any, kernel: Any, hidden: Any, n_classes: Any, padding: Any, in_channels: Any, image_size: Any
) -> dict[str, Any]:
    """A CNN's sizes, validated against the limits without building anything; ``dense`` is the head's sizes."""
    kernel = _whole(kernel, "kernel", 1, CNN_MAX_KERNEL)
    padding = _whole(kernel // 2 if padding is None else padding, "padding", 0, kernel - 1)
    channels = _whole_list(channels, "channels", 1, CNN_MAX_CHANNELS, CNN_MAX_BLOCKS, 1)
    hidden = _whole_list(hidden, "hidden", 1, LIMITS.max_hidden_width, LIMITS.max_hidden_layers)
    n_classes = _whole(n_classes, "n_classes", 1, LIMITS.max_classes)
    in_channels = _whole(in_channels, "in_channels", 1, CNN_MAX_IN_CHANNELS)
    image_size = _whole(image_size, "image_size", 1, CNN_MAX_IMAGE)
    side = cnn_shapes(channels, kernel, padding, in_channels, image_size)[-1][1]
    dense = (channels[-1] * side * side, *hidden, n_classes)
    convs = list(zip((in_channels, *channels[:-1]), channels, strict=True))
    n_params = sum(o * (i * kernel**2 + 1) for i, o in convs)
    n_params += sum(o * (i + 1) for i, o in zip(dense[:-1], dense[1:], strict=True))
    if n_params > CNN_MAX_PARAMETERS:
        raise XWPError(f"this CNN would have {n_params:,} parameters; the limit is {CNN_MAX_PARAMETERS:,}")
    return {
        "channels": channels,
        "kernel": kernel,
        "padding": padding,
        "hidden": hidden,
        "n_classes": n_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "dense": dense,
    }


class CNN(KeepsInitial):
    """Small convolutional network that remembers its initial parameters.

    ``[Conv2d(k x k, padding) -> ReLU -> MaxPool2d(2)] x len(channels)`` then a ReLU dense
    head ``hidden... -> n_classes``. The first layer is the ``nn.Conv2d`` that
    :class:`xwp.XWP` perturbs (see :mod:`xwp.attribution.first_layer` for the convolutional definition).

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
        channels: Sequence[int] = (32, 64),
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
        spec = cnn_spec(channels, kernel, hidden, n_classes, padding, in_channels, image_size)
        self.channels, self.kernel, self.padding = spec["channels"], spec["kernel"], spec["padding"]
        self.hidden, self.n_classes = spec["hidden"], spec["n_classes"]
        self.in_channels, self.image_size = spec["in_channels"], spec["image_size"]
        dense = spec["dense"]
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

    family = "cnn"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input image, ``(channels, height, width)``."""
        return (self.in_channels, self.image_size, self.image_size)

    def reset_parameters(self, seed: int, init: str = "torch") -> None:
        """Re-initialise every layer from ``seed`` and store that state as the initial one."""
        seed = check_seed(seed)
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
        """Architecture in short, e.g. ``cnn 1x28x28 c32-c64 k3 p1 | 128-10``."""
        return describe_arch(self.arch())

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
CNN_KEYS = ("channels", "kernel", "padding", "hidden", "n_classes", "in_channels", "image_size")


def check_arch(arch: Any) -> dict[str, Any]:
    """Validate :meth:`MLP.arch` / :meth:`CNN.arch` metadata without building anything; return it normalised.

    Untrusted input (a checkpoint's JSON): anything malformed or over the limits raises
    :class:`~xwp.errors.XWPError`. Other keys are ignored, so a checkpoint's whole metadata
    can be passed. A dict without ``"arch"`` is an MLP (checkpoints written before CNNs).
    The result has ``arch`` and the family's sizes (an MLP: ``sizes``; a CNN: :data:`CNN_KEYS`).
    """
    if not isinstance(arch, dict):
        raise XWPError("the architecture must be a JSON object")
    kind = arch.get("arch", "mlp")
    if kind == "mlp":
        sizes = arch.get("sizes")
        if not isinstance(sizes, list) or not all(type(v) is int for v in sizes):
            raise XWPError(f"MLP sizes must be a list of whole numbers, got {str(sizes)[:60]!r}")
        sizes = check_sizes(sizes)
        if sizes[0] > CNN_MAX_IN_CHANNELS * CNN_MAX_IMAGE**2 or sizes[-1] > LIMITS.max_classes:
            raise XWPError(f"MLP input or output size is over the limits: {sizes[0]}, {sizes[-1]}")
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        if n_params > MLP_MAX_PARAMETERS:
            raise XWPError(f"this MLP would have {n_params:,} parameters; the limit is {MLP_MAX_PARAMETERS:,}")
        return {"arch": "mlp", "sizes": list(sizes)}
    if kind == "cnn":
        missing = [k for k in CNN_KEYS if k not in arch]
        if missing:
            raise XWPError(f"a CNN architecture needs {', '.join(CNN_KEYS)}; {', '.join(missing)} missing")
        if not isinstance(arch["channels"], list) or not isinstance(arch["hidden"], list):
            raise XWPError("CNN channels and hidden must be lists of whole numbers")
        spec = cnn_spec(**{k: arch[k] for k in CNN_KEYS})
        return {"arch": "cnn", **{k: list(v) if isinstance(v, tuple) else v for k, v in spec.items() if k != "dense"}}
    raise XWPError(f"unknown architecture {str(kind)[:40]!r}; xwp knows {', '.join(ARCHS)}")


def arch_io(arch: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """``(input_shape, n_classes)`` of a :func:`check_arch` result."""
    if arch["arch"] == "mlp":
        return (arch["sizes"][0],), arch["sizes"][-1]
    return (arch["in_channels"], arch["image_size"], arch["image_size"]), arch["n_classes"]


def param_shapes(arch: dict[str, Any]) -> dict[str, list[int]]:
    """Every parameter's shape, keyed like ``model.net.state_dict()``, of a :func:`check_arch` result."""
    out: dict[str, list[int]] = {}
    if arch["arch"] == "mlp":
        for i, (a, b) in enumerate(zip(arch["sizes"][:-1], arch["sizes"][1:], strict=True)):
            out[f"{2 * i}.weight"], out[f"{2 * i}.bias"] = [b, a], [b]
        return out
    k, channels = arch["kernel"], arch["channels"]
    for i, (c_in, c_out) in enumerate(zip((arch["in_channels"], *channels[:-1]), channels, strict=True)):
        out[f"{3 * i}.weight"], out[f"{3 * i}.bias"] = [c_out, c_in, k, k], [c_out]
    side = cnn_shapes(arch["channels"], k, arch["padding"], arch["in_channels"], arch["image_size"])[-1][1]
    dense = (arch["channels"][-1] * side * side, *arch["hidden"], arch["n_classes"])
    start = 3 * len(arch["channels"])
    for j, (a, b) in enumerate(zip(dense[:-1], dense[1:], strict=True)):
        out[f"{start + 2 * j}.weight"], out[f"{start + 2 * j}.bias"] = [b, a], [b]
    return out


def describe_arch(arch: dict[str, Any]) -> str:
    """A :func:`check_arch` result in short: ``784-400-100-10`` or ``cnn 1x28x28 c32-c64 k3 p1 | 128-10``."""
    if arch["arch"] == "mlp":
        return "-".join(str(s) for s in arch["sizes"])
    convs = "-".join(f"c{c}" for c in arch["channels"])
    head = "-".join(str(s) for s in (*arch["hidden"], arch["n_classes"]))
    size = f"{arch['in_channels']}x{arch['image_size']}x{arch['image_size']}"
    return f"cnn {size} {convs} k{arch['kernel']} p{arch['padding']} | {head}"


def build_model(arch: Any, seed: Any = 0, init: Any = "torch") -> MLP | CNN:
    """Rebuild a network from :meth:`MLP.arch` / :meth:`CNN.arch` metadata (sizes checked by :func:`check_arch`)."""
    arch = check_arch(arch)
    seed = check_seed(seed)
    if init not in INITS:
        raise XWPError(f"init must be one of {', '.join(INITS)}, got {str(init)[:40]!r}")
    if arch["arch"] == "mlp":
        return MLP(arch["sizes"], seed=seed, init=init)
    return CNN(**{k: arch[k] for k in CNN_KEYS}, seed=seed, init=init)


def _initial_name(param_name: str) -> str:
    """Buffer name for the initial value of a parameter (``net.0.weight`` -> ``initial_0_weight``)."""
    return "initial_" + param_name.replace(".", "_")

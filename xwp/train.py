"""Training: :class:`TrainConfig` + :func:`fit`, the one way to build and train a model from settings.

:func:`train` is the loop itself (progress callbacks, early stop on request, a guard
against divergence); :func:`fit` builds the network a :class:`TrainConfig` describes,
trains it with :func:`train` and returns it with its history and checkpoint metadata.
The CLI, the app (Train page and default model) and the study all go through :func:`fit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xwp.config import LIMITS
from xwp.data.datasets import ImageSet, load_dataset
from xwp.data.images import IMAGE_SHAPE
from xwp.devices import default_device, model_device
from xwp.errors import TrainingDiverged, XWPError
from xwp.models import CNN, MLP, check_seed, check_sizes, cnn_spec, parse_hidden
from xwp.models import build_model as build_arch

OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("cosine", "constant")
#: network families :func:`build_model` can make
ARCHS = ("mlp", "cnn")
#: hidden (dense) layers when none are given: the paper's MLP, and the CNN's dense head
DEFAULT_HIDDEN = {"mlp": (400, 100), "cnn": (128,)}


@dataclass
class History:
    """Per-epoch loss and accuracies of one training run."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stopped: str = ""
    chance_loss: float = float("nan")

    def as_dict(self) -> dict:
        """Plain dict (JSON friendly)."""
        return asdict(self)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.loss)

    @property
    def diverging(self) -> bool:
        """True when an epoch's mean loss went far above chance level (the learning rate is too high).

        ReLU networks rarely reach NaN: with a huge step the loss explodes, the units die
        and the loss settles near chance. That run is not an error, but it is no model.
        """
        return bool(self.loss) and max(self.loss) > 2.0 * self.chance_loss


@dataclass
class Progress:
    """What a progress callback receives, after every ``report_every`` steps and every epoch."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    history: History
    epoch_done: bool

    @property
    def fraction(self) -> float:
        """Overall fraction done, in [0, 1]."""
        return min(1.0, ((self.epoch - 1) + self.step / max(1, self.steps)) / max(1, self.epochs))


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageSet, batch_size: int = 2048, device: torch.device | None = None) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly."""
    return float((predict(model, data.images, batch_size, device) == data.labels).float().mean())


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 2048, device: torch.device | None = None
) -> torch.Tensor:
    """Predicted classes ``(N,)`` on the CPU."""
    device = device or model_device(model)
    out = [model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def confusion_matrix(model: nn.Module, data: ImageSet) -> np.ndarray:
    """Counts ``(C, C)`` of true (rows) against predicted (columns) classes."""
    c = len(data.classes)
    pred = predict(model, data.images).numpy()
    return np.bincount(data.labels.numpy() * c + pred, minlength=c * c).reshape(c, c)


def training_meta(
    dataset: str,
    data_dir: str | None,
    classes: Sequence[str],
    history: History | None = None,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    seed: int,
) -> dict[str, Any]:
    """What a checkpoint records of its training.

    The dataset and its folder, the settings given to :func:`train` (the same keyword
    arguments) and, with ``history``, the result.
    """
    meta: dict[str, Any] = {
        "dataset": dataset,
        "data_dir": data_dir,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "train_seed": seed,
        "classes": list(classes),
    }
    if history is not None:
        meta.update(test_accuracy=history.test_accuracy[-1], history=history.as_dict())
    return meta


def check_settings(epochs: int, lr: float, batch_size: int, optimizer: str, schedule: str = "cosine") -> None:
    """Refuse settings that cannot train, with a message that says why."""
    if not isinstance(epochs, int) or epochs < 1:
        raise XWPError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    if epochs > LIMITS.max_epochs:
        raise XWPError(f"epochs are limited to {LIMITS.max_epochs} (XWP_MAX_EPOCHS), got {epochs}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and 0 < lr <= 10):
        raise XWPError(f"the learning rate must be a number in (0, 10], got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise XWPError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    if optimizer not in OPTIMIZERS:
        raise XWPError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise XWPError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def train(
    model: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    optimizer: str = "adam",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[Progress], bool | None] | None = None,
    report_every: int = 50,
    schedule: str = "cosine",
) -> History:
    """Train ``model`` with cross-entropy; return the per-epoch :class:`History`.

    Args:
        model: the network (e.g. ``xwp.MLP``); trained in place, left in eval mode.
        train_set, test_set: :class:`~xwp.data.ImageSet` splits (test is optional).
        epochs, lr, batch_size: the usual; ``optimizer`` is ``adam``, ``adamw`` or ``sgd``
            (with momentum 0.9).
        seed: seed of the shuffling.
        schedule: ``"cosine"`` (learning rate annealed to 0 over the run, per step) or
            ``"constant"``.
        device: defaults to CUDA when available; the model ends on this device.
        progress: called with a :class:`Progress` every ``report_every`` steps and at
            the end of each epoch; returning ``False`` stops training after the step.

    A NaN or infinite loss stops training with :class:`~xwp.errors.TrainingDiverged`;
    the model then holds the last weights that gave a finite loss.
    """
    check_settings(epochs, lr, batch_size, optimizer, schedule)
    for data in (train_set, test_set):
        if data is not None and not isinstance(data, ImageSet):
            raise XWPError(f"train() takes ImageSet splits (xwp.load_dataset), got {type(data).__name__}")
    seed = check_seed(seed)
    if len(train_set) == 0:
        raise XWPError("the training set is empty")
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    params = list(model.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    x_all, y_all = train_set.images.to(device), train_set.labels.to(device)
    gen = torch.Generator().manual_seed(seed)
    steps = math.ceil(len(y_all) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps) if schedule == "cosine" else None
    with torch.no_grad():
        n_classes = int(model(x_all[:1]).shape[1])
    history = History(chance_loss=math.log(n_classes))
    last_good = [p.detach().clone() for p in params]
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(y_all), generator=gen).to(device)
        total, seen = 0.0, 0
        correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: one sync per step
        for step in range(1, steps + 1):
            idx = order[(step - 1) * batch_size : step * batch_size]
            x, y = x_all[idx], y_all[idx]
            logits = model(x)  # (b, C)
            loss = F.cross_entropy(logits, y)
            value = loss.item()  # the step's one wait for the device
            if not math.isfinite(value):
                with torch.no_grad():
                    for p, good in zip(params, last_good, strict=True):
                        p.copy_(good)
                model.eval()
                history.stopped = f"diverged at epoch {epoch}, step {step}"
                raise TrainingDiverged(
                    f"training diverged: the loss became {value} at epoch {epoch}, step {step}; "
                    f"the model keeps the last weights with a finite loss. Lower the learning rate (now {lr:g}).",
                    history,
                )
            with torch.no_grad():
                for p, good in zip(params, last_good, strict=True):
                    good.copy_(p)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += value * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            report = progress is not None and step % report_every == 0 and step < steps
            if report and progress(Progress(epoch, epochs, step, steps, total / seen, history, False)) is False:
                history.stopped = f"stopped at epoch {epoch}, step {step}"
                break
        history.loss.append(total / seen)
        history.train_accuracy.append(int(correct) / seen)
        model.eval()
        history.test_accuracy.append(accuracy(model, test_set, device=device) if test_set is not None else float("nan"))
        model.train()
        history.seconds.append(time.perf_counter() - started)
        if history.stopped:
            break
        if (
            progress is not None
            and progress(Progress(epoch, epochs, steps, steps, total / seen, history, True)) is False
        ):
            history.stopped = f"stopped after epoch {epoch}"
            break
    model.eval()
    return history


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model: data, architecture, optimisation, seed.

    ``arch`` names the network family: ``"mlp"`` (:class:`xwp.MLP`) or ``"cnn"``
    (:class:`xwp.CNN`, with ``channels`` per conv block and a square ``kernel``).
    ``hidden``: hidden (dense) layer sizes (a tuple, or text such as ``"400,100"``; empty:
    none; ``None``: ``(400, 100)`` for an MLP, a ``(128,)`` head for a CNN).
    ``seed`` draws the initial weights and the shuffling.
    """

    dataset: str = "typeface"
    data_dir: str | None = None
    hidden: tuple[int, ...] | None = None
    epochs: int = 10
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    init: str = "torch"
    schedule: str = "cosine"
    arch: str = "mlp"
    channels: tuple[int, ...] = (32, 64)
    kernel: int = 3

    def __post_init__(self) -> None:
        hidden = DEFAULT_HIDDEN.get(self.arch, ()) if self.hidden is None else self.hidden
        object.__setattr__(self, "hidden", parse_hidden(hidden))
        try:
            object.__setattr__(self, "channels", parse_hidden(self.channels))
        except XWPError:
            raise XWPError(
                f"CNN channels must be whole numbers separated by commas, e.g. 32,64; got {str(self.channels)[:40]!r}"
            ) from None

    @property
    def fit_kwargs(self) -> dict[str, Any]:
        """The settings :func:`training_meta` records (keyword arguments of :func:`train`)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "seed": self.seed,
        }

    def check(self) -> TrainConfig:
        """Refuse settings that cannot train (sizes within limits, then the optimisation); return self."""
        if self.arch not in ARCHS:
            raise XWPError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.arch == "cnn":
            channels, side = IMAGE_SHAPE[0], IMAGE_SHAPE[-1]  # the datasets' images
            cnn_spec(self.channels, self.kernel, self.hidden, 2, None, channels, side)
        else:
            check_sizes((1, *self.hidden, 1))
        check_settings(self.epochs, self.lr, self.batch_size, self.optimizer, self.schedule)
        return self

    def meta(self, classes: Sequence[str], history: History | None = None) -> dict[str, Any]:
        """What a checkpoint of this training records (see :func:`training_meta`)."""
        return training_meta(self.dataset, self.data_dir, classes, history, **self.fit_kwargs)


@dataclass
class Fitted:
    """A model trained by :func:`fit`, its history and the metadata its checkpoint keeps."""

    model: MLP | CNN
    history: History
    meta: dict[str, Any]


def build_model(config: TrainConfig, input_shape: int | Sequence[int], n_classes: int) -> MLP | CNN:
    """The untrained network ``config`` describes for inputs of ``input_shape`` and ``n_classes`` classes.

    ``input_shape`` is one image's shape, e.g. ``(1, 28, 28)`` (an int: that many flat
    values, enough for an MLP). Goes through :func:`xwp.models.build_model`, the one
    constructor of both families (checkpoints use it too).
    """
    config.check()
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(v) for v in input_shape)
    if config.arch == "mlp":
        arch = {"arch": "mlp", "sizes": [math.prod(shape), *config.hidden, n_classes]}
    else:
        if len(shape) != 3 or shape[1] != shape[2]:
            raise XWPError(f"a CNN needs square images (C, H, H), got input shape {shape}")
        arch = {
            "arch": "cnn",
            "channels": list(config.channels),
            "kernel": config.kernel,
            "padding": config.kernel // 2,
            "hidden": list(config.hidden),
            "n_classes": n_classes,
            "in_channels": shape[0],
            "image_size": shape[1],
        }
    return build_arch(arch, seed=config.seed, init=config.init)


def fit(
    config: TrainConfig,
    train_set: ImageSet | None = None,
    test_set: ImageSet | None = None,
    *,
    model: MLP | CNN | None = None,
    progress: Callable[[Progress], bool | None] | None = None,
    stop: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
    report_every: int = 50,
) -> Fitted:
    """Build the network of ``config`` and train it; return it (on ``device``) with history and metadata.

    Args:
        config: the settings; checked before any data is loaded.
        train_set, test_set: the splits (default: loaded from ``config.dataset`` and
            ``config.data_dir``).
        model: a network already made by :func:`build_model` for these settings (e.g. to
            describe it before training starts); trained in place.
        progress: as in :func:`train`; returning ``False`` stops training.
        stop: polled at every progress report; returning ``True`` stops training.
        device: as in :func:`train` (default: CUDA when available).

    Raises :class:`~xwp.errors.TrainingDiverged` like :func:`train`.
    """
    config.check()
    if train_set is None:
        train_set = load_dataset(config.dataset, "train", config.data_dir)
    if test_set is None:
        test_set = load_dataset(config.dataset, "test", config.data_dir)
    if model is None:
        model = build_model(config, tuple(train_set.images[0].shape), len(train_set.classes))
    report = progress
    if stop is not None:

        def report(p: Progress) -> bool | None:
            if stop():
                return False
            return progress(p) if progress is not None else None

    history = train(
        model,
        train_set,
        test_set,
        progress=report,
        device=device,
        report_every=report_every,
        schedule=config.schedule,
        **config.fit_kwargs,
    )
    return Fitted(model, history, config.meta(train_set.classes, history))

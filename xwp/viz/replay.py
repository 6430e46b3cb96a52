"""Training replay: first-layer weight snapshots per epoch, and the side-by-side view of one unit.

The paper's Figure 2 shows, per first-layer unit, its weights at initialisation, after
training and their change. :class:`SnapshotRecorder` is a progress callback for
:func:`xwp.train` that keeps the first-layer weights at epoch 0 (before training) and after
epochs, at most ``max_snapshots`` of them (default 20; with more epochs they are thinned
evenly, the last epoch always kept), stored as float16 to halve their memory (a 400x784
layer: 0.6 MB per snapshot, 12.5 MB for 20). :func:`unit_png` draws initial | trained |
change for one unit; :func:`replay_png` does it for any recorded epoch, for a slider that
steps through training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from xwp.errors import XWPError

MAX_SNAPSHOTS = 20


def first_weight(model: nn.Module) -> torch.Tensor:
    """The first layer's weight: ``(H, D)`` for an ``nn.Linear``, ``(C1, C, k, k)`` for an ``nn.Conv2d``."""
    from xwp.attribution.first_layer import split_first_layer

    return split_first_layer(model).layer.weight


def planned_epochs(epochs: int, max_snapshots: int = MAX_SNAPSHOTS) -> list[int]:
    """The epochs to keep: 0..``epochs`` if they fit, else ``max_snapshots`` evenly spread, 0 and the last included."""
    if max_snapshots < 2:
        raise XWPError("keep at least 2 snapshots (before and after training)")
    if epochs + 1 <= max_snapshots:
        return list(range(epochs + 1))
    return sorted({int(round(v)) for v in np.linspace(0, epochs, max_snapshots)})


class SnapshotRecorder:
    """A :func:`xwp.train` progress callback that records first-layer weights per epoch (bounded).

    Args:
        model: the network being trained; its first layer is copied at creation (epoch 0)
            and after each completed epoch that :func:`planned_epochs` keeps.
        max_snapshots: the bound; never more snapshots are held, whatever the epochs.
        then: another progress callback to call as well (its return value is passed on,
            so a Stop button keeps working).

    Usage: ``rec = SnapshotRecorder(model); xwp.train(model, tr, te, progress=rec)``;
    then ``rec.snapshots`` maps epoch -> ``(H, D)`` float32 array.
    """

    def __init__(self, model: nn.Module, max_snapshots: int = MAX_SNAPSHOTS, then: Callable | None = None):
        planned_epochs(1, max_snapshots)  # validates the bound
        self.model = model
        self.max_snapshots = int(max_snapshots)
        self.then = then
        self._plan: set[int] | None = None
        self._latest: int | None = None  # an unplanned epoch kept only until the next one
        self._store: dict[int, np.ndarray] = {0: self._copy()}

    def _copy(self) -> np.ndarray:
        """The first layer now, as a float16 CPU copy."""
        return first_weight(self.model).detach().to("cpu", torch.float32).numpy().astype(np.float16)

    def __call__(self, progress) -> bool | None:
        """Record after each completed epoch, then call ``then``."""
        if progress.epoch_done:
            self.record(progress.epoch, progress.epochs)
        return self.then(progress) if self.then is not None else None

    def record(self, epoch: int, epochs: int) -> None:
        """Keep the weights after ``epoch`` of ``epochs`` if planned (or as the latest until the next)."""
        if self._plan is None:
            self._plan = set(planned_epochs(epochs, self.max_snapshots))
        if self._latest is not None:
            self._store.pop(self._latest, None)
            self._latest = None
        if epoch not in self._plan:
            self._latest = epoch  # so a run stopped early still ends with its last epoch
        self._store[epoch] = self._copy()

    @property
    def snapshots(self) -> dict[int, np.ndarray]:
        """Epoch -> first-layer weights ``(H, D)`` as float32, in epoch order."""
        return {e: w.astype(np.float32) for e, w in sorted(self._store.items())}

    @property
    def nbytes(self) -> int:
        """Memory the snapshots take."""
        return sum(w.nbytes for w in self._store.values())


def nearest_epoch(snapshots: Mapping[int, np.ndarray], epoch: int) -> int:
    """The recorded epoch closest to ``epoch`` (a slider may ask for one that was thinned out)."""
    if not snapshots:
        raise XWPError("no weight snapshots were recorded for this model")
    return min(snapshots, key=lambda e: (abs(e - epoch), e))


def unit_figure(initial, trained, unit: int, epoch_label: str = "trained", side: int | None = None):
    """Initial | trained | change of one unit's weights, as 28x28 images (the paper's Figure 2, per unit).

    Initial and trained share one colour scale, so growth is visible; the change has its own.
    """
    import matplotlib.pyplot as plt

    from xwp.viz.plots import DIVERGING, symmetric_limit

    w0 = np.asarray(initial, dtype=np.float64).reshape(-1)
    w1 = np.asarray(trained, dtype=np.float64).reshape(-1)
    side = side or math.isqrt(w0.size)  # a square picture of the row's inputs
    if w0.shape != w1.shape or w0.size != side * side:
        raise XWPError(f"expected two weight rows of {side * side} values, got {w0.size} and {w1.size}")
    delta = w1 - w0
    s = symmetric_limit(w0, w1, percentile=100)
    d = symmetric_limit(delta, percentile=100)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    panels = [(w0, "initial", s), (w1, epoch_label, s), (delta, f"change ({epoch_label} − initial)", d)]
    for ax, (a, title, lim) in zip(axes, panels, strict=True):
        shown = ax.imshow(a.reshape(side, side), cmap=DIVERGING, vmin=-lim, vmax=lim)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"Unit #{unit}: first-layer weights")
    fig.tight_layout()
    return fig


def unit_png(initial, trained, unit: int, epoch_label: str = "trained", dpi: int = 100) -> bytes:
    """:func:`unit_figure` as PNG bytes (for display and download)."""
    from xwp.viz.plots import png_bytes

    return png_bytes(unit_figure(initial, trained, unit, epoch_label), dpi=dpi)


def replay_png(snapshots: Mapping[int, np.ndarray], epoch: int, unit: int, dpi: int = 100) -> tuple[bytes, int]:
    """Initial | epoch | change for ``unit`` at the recorded epoch nearest ``epoch``; returns (PNG, that epoch)."""
    e = nearest_epoch(snapshots, epoch)
    first = snapshots[min(snapshots)]
    if not 0 <= unit < len(first):
        raise XWPError(f"unit {unit} does not exist; the first layer has {len(first)} units")
    label = "initial" if e == min(snapshots) else f"epoch {e}"
    return unit_png(first[unit], snapshots[e][unit], unit, label, dpi), e

"""A CNN's first-layer kernels: initial, trained and their change, per output channel.

An MLP's first-layer unit has one weight per pixel, drawn as a 28x28 image
(:mod:`xwp.viz.patterns`). A convolution's output channel ``c`` has one small ``k x k`` kernel
per input channel, shared by every position: :func:`kernel_grid_figure` draws all of them
as three mosaics side by side (initial | trained | change, channel ``c`` in the same tile of
each), :func:`kernel_channel_figure` one channel large with its values written in, and
:func:`kernel_stats` gives the numbers per channel. Plain numpy and matplotlib, no Streamlit.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from torch import nn

from xwp.errors import XWPError
from xwp.viz import plots


def first_kernels(model: nn.Module, initial_model: nn.Module | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """The first convolution's weights ``(C1, C, k, k)`` of ``initial_model`` (None without one) and ``model``.

    Copies in float64 on the CPU; neither model is modified.
    """
    from xwp.viz.replay import first_weight

    w1 = first_weight(model).detach().to("cpu").double().numpy()
    if w1.ndim != 4:
        raise XWPError("this model's first layer is not a convolution; its weights are shown as 28x28 patterns")
    w0 = None if initial_model is None else first_weight(initial_model).detach().to("cpu").double().numpy()
    if w0 is not None and w0.shape != w1.shape:
        raise XWPError(f"initial kernels {w0.shape} do not match the trained ones {w1.shape}")
    return w0, w1


def _check_in_channel(w: np.ndarray, in_channel: int) -> None:
    """Refuse an input channel the kernels do not have."""
    if not 0 <= in_channel < w.shape[1]:
        raise XWPError(f"input channel {in_channel} does not exist; the kernels have {w.shape[1]}")


def mosaic(kernels: np.ndarray, ncols: int) -> np.ndarray:
    """``(n, k, k)`` kernels tiled row by row, ``ncols`` per row, one NaN pixel between tiles (drawn blank)."""
    n, k = kernels.shape[0], kernels.shape[-1]
    rows = max(1, math.ceil(n / ncols))
    out = np.full((rows * (k + 1) - 1, ncols * (k + 1) - 1), np.nan)
    for c in range(n):
        r, q = divmod(c, ncols)
        out[r * (k + 1) : r * (k + 1) + k, q * (k + 1) : q * (k + 1) + k] = kernels[c]
    return out


def kernel_grid_figure(w0: np.ndarray | None, w1: np.ndarray, in_channel: int = 0, ncols: int | None = None):
    """Initial | trained | change of every output channel's kernel (input channel ``in_channel``), side by side.

    Each panel tiles the channels row by row (the row labels give the first channel of each
    row, the column labels the offset). Initial and trained share one colour scale, so growth
    is visible; the change has its own. Without ``w0`` only the trained kernels are drawn.
    """
    import matplotlib.pyplot as plt

    _check_in_channel(w1, in_channel)
    n, k = w1.shape[0], w1.shape[-1]
    ncols = ncols or max(1, min(n, math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / ncols))
    panels = [(w1[:, in_channel], "trained")]
    if w0 is not None:
        delta = w1 - w0
        panels = [(w0[:, in_channel], "initial"), panels[0], (delta[:, in_channel], "change (trained − initial)")]
    s = plots.symmetric_limit(w1[:, in_channel], *([] if w0 is None else [w0[:, in_channel]]), percentile=100)
    cmap = plt.get_cmap(plots.DIVERGING).with_extremes(bad="white")
    side = min(4.2, 0.32 * ncols * (k + 1) + 0.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (side + 0.9), side * rows / ncols + 1.2))
    axes = np.atleast_1d(axes)
    for ax, (w, title) in zip(axes, panels, strict=True):
        lim = s if not title.startswith("change") else plots.symmetric_limit(w, percentile=100)
        shown = ax.imshow(mosaic(w, ncols), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([q * (k + 1) + (k - 1) / 2 for q in range(ncols)], [f"+{q}" for q in range(ncols)], fontsize=8)
        ax.set_yticks([r * (k + 1) + (k - 1) / 2 for r in range(rows)], [f"#{r * ncols}" for r in range(rows)])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    where = f", input channel {in_channel}" if w1.shape[1] > 1 else ""
    fig.suptitle(f"First-layer kernels: {n} output channels, {k}x{k}{where}")
    fig.tight_layout()
    return fig


def kernel_channel_figure(w0: np.ndarray | None, w1: np.ndarray, channel: int, in_channel: int = 0):
    """Initial | trained | change of output channel ``channel``'s kernel, large, values written in (k ≤ 9)."""
    import matplotlib.pyplot as plt

    _check_in_channel(w1, in_channel)
    if not 0 <= channel < w1.shape[0]:
        raise XWPError(f"channel {channel} does not exist; the first layer has {w1.shape[0]}")
    k1 = w1[channel, in_channel]
    panels = [(k1, "trained")]
    if w0 is not None:
        k0 = w0[channel, in_channel]
        panels = [(k0, "initial"), panels[0], (k1 - k0, "change (trained − initial)")]
    s = plots.symmetric_limit(*[p for p, t in panels if not t.startswith("change")], percentile=100)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.6))
    axes = np.atleast_1d(axes)
    k = k1.shape[-1]
    for ax, (w, title) in zip(axes, panels, strict=True):
        lim = s if not title.startswith("change") else plots.symmetric_limit(w, percentile=100)
        shown = ax.imshow(w, cmap=plots.DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        if k <= 9:
            for (i, j), v in np.ndenumerate(w):
                colour = "white" if abs(v) > 0.6 * lim else "black"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=max(6, 13 - k), color=colour)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    where = f", input channel {in_channel}" if w1.shape[1] > 1 else ""
    fig.suptitle(f"Channel #{channel}: first-layer kernel ({k}x{k}{where})")
    fig.tight_layout()
    return fig


def kernel_stats(w0: np.ndarray | None, w1: np.ndarray) -> pd.DataFrame:
    """One row per output channel: norms of the initial and trained kernels, of the change, relative change, cosine.

    L2 norms over all input channels; the relative change is ``‖W − W₀‖ / ‖W₀‖``; the cosine
    is between the initial and the trained kernel. Without ``w0``: the trained norm only.
    """
    n = w1.shape[0]
    t = w1.reshape(n, -1)
    out = pd.DataFrame({"channel": np.arange(n), "‖W‖ trained": np.linalg.norm(t, axis=1)})
    if w0 is not None:
        i = w0.reshape(n, -1)
        n0, d = np.linalg.norm(i, axis=1), np.linalg.norm(t - i, axis=1)
        out.insert(1, "‖W₀‖ initial", n0)
        out["‖W − W₀‖ change"] = d
        out["change / ‖W₀‖"] = np.divide(d, n0, out=np.full(n, np.nan), where=n0 > 0)
        denom = n0 * out["‖W‖ trained"].to_numpy()
        out["cos(W₀, W)"] = np.divide((i * t).sum(1), denom, out=np.full(n, np.nan), where=denom > 0)
    return out


def kernel_grid_png(w0: np.ndarray | None, w1: np.ndarray, in_channel: int = 0, dpi: int = 100) -> bytes:
    """:func:`kernel_grid_figure` as PNG bytes (for display and download)."""
    return plots.png_bytes(kernel_grid_figure(w0, w1, in_channel), dpi=dpi)


def kernel_channel_png(
    w0: np.ndarray | None, w1: np.ndarray, channel: int, in_channel: int = 0, dpi: int = 100
) -> bytes:
    """:func:`kernel_channel_figure` as PNG bytes (for display and download)."""
    return plots.png_bytes(kernel_channel_figure(w0, w1, channel, in_channel), dpi=dpi)

"""The Weights page's glue: the latest patterns and figures, the per-unit side-by-side view and the training replay.

Patterns, statistics and figures are computed on the compute executor at ``NORMAL``
priority (:func:`xwp.app.work.run`), behind live strokes; the session keeps the latest ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xwp.app import work, workspace_glue
from xwp.app.session import SessionModel, memo
from xwp.app.shared import test_set
from xwp.errors import XWPError
from xwp.viz import kernels, patterns, plots, replay
from xwp.viz.patterns import WeightPatterns


def weight_patterns(
    entry: SessionModel, view: str = "trained", sort: str = "index", cls: int = 0, image_index: int | None = None
) -> WeightPatterns:
    """:func:`xwp.viz.patterns.weight_patterns` of ``entry``; ``image_index``: a test image to weight by.

    Class drive is taken at the mean test image (all ReLUs open if the test split is not
    available). The session keeps the latest patterns and their figures, so a rerun that
    changes nothing here (e.g. another unit for the large view) draws nothing again.
    """
    store = memo()
    key = (entry.uid, view, sort, cls, image_index)
    if store.get("weights", (None,))[0] != key:
        image = None if image_index is None else test_set(entry).images[image_index]
        try:
            reference = test_set(entry).images.mean(0, keepdim=True)
        except XWPError:
            reference = None
        wp = work.run(patterns.weight_patterns, entry.model, entry.initial_model, view, sort, cls, image, reference)
        store["weights"] = (key, wp)
    return store["weights"][1]


def grid_png(entry: SessionModel, wp: WeightPatterns, count: int, sort: str, cls: int) -> bytes:
    """The grid of the first ``count`` patterns in display order (the paper's Figure 2), as PNG."""
    return work.run(patterns.grid_png, wp, count, sort, entry.classes[cls])


def neuron_stats(entry: SessionModel, wp: WeightPatterns, j: int) -> pd.DataFrame:
    """Numbers about first-layer unit ``j`` of ``entry`` (see :func:`xwp.viz.patterns.neuron_stats`)."""
    return work.run(patterns.neuron_stats, entry.model, entry.initial_model, wp, j, entry.classes)


def unit_png(entry: SessionModel, j: int) -> bytes:
    """Initial | trained | change of unit ``j`` side by side (the paper's Figure 2 per unit), as PNG."""
    store = memo()
    key = ("unit", entry.uid, j)
    if store.get("weights_unit", (None,))[0] != key:
        w0 = patterns.first_layer(entry.model, entry.initial_model, "initial")[j]
        w1 = patterns.first_layer(entry.model, entry.initial_model, "trained")[j]
        store["weights_unit"] = (key, work.run(replay.unit_png, w0, w1, j, dpi=plots.FIG_DPI))
    return store["weights_unit"][1]


def snapshots(entry: SessionModel) -> dict[int, np.ndarray]:
    """First-layer weights per recorded epoch of ``entry`` (empty when none were recorded)."""
    return workspace_glue.snapshots(entry)


def replay_grid_png(entry: SessionModel, snaps: dict[int, np.ndarray], epoch: int, units: list[int]) -> bytes:
    """The change of ``units`` since initialisation at recorded ``epoch``, on the last epoch's colour scale."""
    store = memo()
    key = ("replay", entry.uid, epoch, tuple(units))
    if store.get("weights_replay", (None,))[0] != key:
        store["weights_replay"] = (key, work.run(_replay_grid, snaps, epoch, units))
    return store["weights_replay"][1]


def replay_unit_png(snaps: dict[int, np.ndarray], epoch: int, j: int) -> bytes:
    """Initial | epoch | change of unit ``j`` at recorded ``epoch`` (see :func:`xwp.viz.replay.replay_png`)."""
    store = memo()
    key = ("replay_unit", id(snaps), epoch, j)
    if store.get("weights_replay_unit", (None,))[0] != key:
        store["weights_replay_unit"] = (key, work.run(replay.replay_png, snaps, epoch, j, dpi=plots.FIG_DPI)[0])
    return store["weights_replay_unit"][1]


def _replay_grid(snaps: dict[int, np.ndarray], epoch: int, units: list[int]) -> bytes:
    """:func:`replay_grid_png`'s figure (drawn on the executor)."""
    first = snaps[min(snaps)][units].astype(np.float32)
    limit = plots.symmetric_limit(snaps[max(snaps)][units].astype(np.float32) - first)
    fig = plots.weights_grid(
        snaps[epoch][units].astype(np.float32) - first,
        titles=[f"#{j}" for j in units],
        limit=limit,
        title=f"Epoch {epoch}: change since initialisation (scale of the last epoch)",
    )
    return plots.png_bytes(fig, dpi=plots.FIG_DPI)


def _kernels(entry: SessionModel) -> tuple[np.ndarray | None, np.ndarray]:
    """``entry``'s first-layer kernels (initial or None, trained), kept for the latest model."""
    store = memo()
    if store.get("kernels", (None,))[0] != entry.uid:
        store["kernels"] = (entry.uid, kernels.first_kernels(entry.model, entry.initial_model))
    return store["kernels"][1]


def kernel_grid_png(entry: SessionModel, in_channel: int = 0) -> bytes:
    """A CNN's first-layer kernels, initial | trained | change per output channel, as PNG (:mod:`xwp.viz.kernels`)."""
    store = memo()
    key = ("kernel_grid", entry.uid, in_channel)
    if store.get("kernel_grid", (None,))[0] != key:
        w0, w1 = _kernels(entry)
        store["kernel_grid"] = (key, kernels.kernel_grid_png(w0, w1, in_channel, dpi=plots.FIG_DPI))
    return store["kernel_grid"][1]


def kernel_channel_png(entry: SessionModel, channel: int, in_channel: int = 0) -> bytes:
    """One output channel's kernel large: initial | trained | change with values, as PNG."""
    store = memo()
    key = ("kernel_channel", entry.uid, channel, in_channel)
    if store.get("kernel_channel", (None,))[0] != key:
        w0, w1 = _kernels(entry)
        store["kernel_channel"] = (key, kernels.kernel_channel_png(w0, w1, channel, in_channel, dpi=plots.FIG_DPI))
    return store["kernel_channel"][1]


def kernel_stats(entry: SessionModel) -> pd.DataFrame:
    """Per output channel: kernel norms, change, relative change, cosine (see :func:`xwp.viz.kernels.kernel_stats`)."""
    return kernels.kernel_stats(*_kernels(entry))

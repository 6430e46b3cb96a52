"""The Weights page's glue: patterns computed on the compute executor (NORMAL priority), kept per session."""

from __future__ import annotations

import pandas as pd

from xwp import patterns
from xwp.app import work
from xwp.app.session import SessionModel, memo
from xwp.app.shared import test_set
from xwp.errors import XWPError
from xwp.patterns import WeightPatterns


def weight_patterns(
    entry: SessionModel, view: str = "trained", sort: str = "index", cls: int = 0, image_index: int | None = None
) -> WeightPatterns:
    """:func:`xwp.patterns.weight_patterns` of ``entry``; ``image_index``: a test image to weight by.

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
    """Numbers about first-layer unit ``j`` of ``entry`` (see :func:`xwp.patterns.neuron_stats`)."""
    return work.run(patterns.neuron_stats, entry.model, entry.initial_model, wp, j, entry.classes)

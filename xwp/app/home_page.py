"""The Home page's glue: the example heatmaps of the active model, drawn once per session and model."""

from __future__ import annotations

from xwp.app import work
from xwp.app.session import SessionModel, memo
from xwp.app.shared import test_set
from xwp.errors import XWPError
from xwp.serve.explanation import example_grid


def home_example(entry: SessionModel, n: int = 3) -> bytes | None:
    """PNG of XWP and XWPᶜ on ``n`` correctly classified test images of different classes (None if unavailable)."""
    store = memo()
    key = ("home", entry.uid, n)
    if key not in store:
        try:
            data = test_set(entry)
        except XWPError:
            return None
        png = work.run(example_grid, entry.model, data, entry.initial_model, entry.classes, n)
        if png is None:
            return None
        store[key] = png
    return store[key]

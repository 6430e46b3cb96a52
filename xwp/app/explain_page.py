"""The Explain page's glue: test images of the active model's dataset and the session's memo of maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xwp.app import work
from xwp.app.session import SessionModel, memo
from xwp.app.shared import test_set
from xwp.errors import XWPError
from xwp.explanation import EXPLAIN_DEFAULT, Explanation
from xwp.explanation import explain as _explain


def test_image(entry: SessionModel, label: int, k: int) -> tuple[torch.Tensor, int]:
    """The ``k``-th test image of class ``label`` and its index in the test split."""
    data = test_set(entry)
    idx = torch.nonzero(data.labels == label).flatten()
    if len(idx) == 0:
        raise XWPError(f"the test split has no image of class {entry.classes[label]}")
    i = int(idx[min(max(k, 0), len(idx) - 1)])
    return data.images[i : i + 1], i


def class_count(entry: SessionModel, label: int) -> int:
    """How many test images have class ``label`` (0 if the test split is unavailable)."""
    try:
        return int((test_set(entry).labels == label).sum())
    except XWPError:
        return 0


def explain(
    entry: SessionModel,
    x: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] = EXPLAIN_DEFAULT,
    shared_scale: bool = False,
    overlay: bool = False,
) -> Explanation:
    """:func:`xwp.explanation.explain` for a model of this session, computed on the compute executor.

    The prediction and the maps are requests to :func:`xwp.compute.get_executor` (merged with
    other sessions' strokes on the same model, see :func:`xwp.app.work.stroke`); maps already
    computed come from the session's memo.
    """
    store = memo()
    probs = work.stroke(entry.model, entry.initial_model, entry.uid, x, target, methods, store)
    return _explain(
        entry.model,
        x,
        target,
        methods,
        initial_model=entry.initial_model,
        classes=entry.classes,
        shared_scale=shared_scale,
        overlay=overlay,
        memo=store,
        memo_key=entry.uid,
        probs=probs,
    )

"""The Explain page's glue: test images, the session's memo of maps, photo cleaning and the familiarity warning."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import torch

from xwp.app import work
from xwp.app.session import SessionModel, memo
from xwp.app.shared import dataset, test_set
from xwp.cleaning import Reference, build_reference, photo_to_input, unlike_training
from xwp.data import DATASETS, load_image
from xwp.errors import XWPError
from xwp.explanation import EXPLAIN_DEFAULT, Explanation, method_problems
from xwp.explanation import explain as _explain
from xwp.uploads import check_upload


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


def unavailable(entry: SessionModel) -> dict[str, str]:
    """``{method: why it does not apply}`` for the active model, to mark them in the method picker."""
    return method_problems(entry.model, entry.has_initial)


def explain(
    entry: SessionModel,
    x: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] = EXPLAIN_DEFAULT,
    shared_scale: bool = False,
    overlay: bool = False,
    space: str = "probability",
) -> Explanation:
    """:func:`xwp.explanation.explain` for a model of this session, computed on the compute executor.

    The prediction and the maps are requests to :func:`xwp.compute.get_executor` (merged with
    other sessions' strokes on the same model, see :func:`xwp.app.work.stroke`); maps already
    computed come from the session's memo.
    """
    store = memo()
    probs = work.stroke(entry.model, entry.initial_model, entry.uid, x, target, methods, store, space)
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
        space=space,
        probs=probs,
    )


# --------------------------------------------------------------------------- unlike the training data

MAX_REFERENCES = 6  # per-model references kept by the process (about 6 MB each)
_references: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> Reference | None
_references_lock = threading.Lock()


def reference(entry: SessionModel) -> Reference | None:
    """What ``entry``'s training data looks like (built once per model, at most :data:`MAX_REFERENCES` kept).

    None when the model's dataset is not available here (an uploaded checkpoint of unknown
    data): the warning then rests on the photo's own facts.
    """
    with _references_lock:
        if entry.model in _references:
            return _references[entry.model]
    try:
        name = entry.meta.get("dataset")
        if name not in DATASETS:
            raise XWPError("unknown dataset")
        train = dataset(name, "train", entry.meta.get("data_dir"))
        test = test_set(entry)
        ref = build_reference(train.images, test.images, entry.model)
    except XWPError:
        ref = None
    with _references_lock:
        while len(_references) >= MAX_REFERENCES:
            _references.pop(next(iter(_references.keys())))
        _references[entry.model] = ref
    return ref


def upload_input(entry: SessionModel, data: bytes) -> tuple[torch.Tensor, str | None]:
    """An uploaded photo cleaned (ink separated from background, MNIST layout) and its warning, if any."""
    check_upload(data, "image")  # size and format by content, before anything decodes it
    x, cleaned = photo_to_input(load_image(data))
    return x, unlike_training(x, reference(entry), entry.model, cleaned)


def drawing_warning(entry: SessionModel, x: torch.Tensor) -> str | None:
    """The "unlike the training data" warning for a drawn or test input (None if it looks familiar)."""
    return unlike_training(x, reference(entry), entry.model)

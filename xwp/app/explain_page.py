"""The Explain page's glue: test images, the session's memo of maps, photo cleaning and the familiarity warning."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import torch

from xwp.app import work
from xwp.app.session import SessionModel, memo
from xwp.app.shared import dataset, test_set
from xwp.data.cleaning import Reference, build_reference, photo_to_input, unlike_training
from xwp.data.datasets import DATASETS, load_image
from xwp.errors import XWPError
from xwp.serve.explanation import EXPLAIN_DEFAULT, Explanation, method_problems
from xwp.serve.explanation import explain as _explain
from xwp.serve.uploads import check_upload


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
    """:func:`xwp.serve.explanation.explain` for a model of this session, computed on the compute executor.

    The prediction and the maps are requests to :func:`xwp.serve.compute.get_executor` (merged with
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


def initial_state_view(entry: SessionModel, x: torch.Tensor, ex: Explanation) -> None:
    """Opt-in view "What the initial state adds": XWP = XWP with a zero initial state + the initial projection's effect.

    :func:`xwp.evaluation.ablation.initial_state_effect` on the shown input, class and score space: with
    the first layer's initial weights at 0, XWP is exactly 2 × Occlusion (1×1, baseline 0) on
    probability; the rest, XWP − 2·Occlusion, is what the initial projection x_i·W0_i changes.
    Three tiles on one colour scale, one sentence and the Spearman correlation on non-zero pixels.
    """
    import numpy as np
    import streamlit as st

    from xwp.data.images import png
    from xwp.evaluation.ablation import ZERO_STATE_LABEL, initial_state_effect
    from xwp.serve.explanation import method_problem, model_input
    from xwp.viz import plots

    if not st.toggle(
        "What the initial state adds",
        key="explain_initial",
        persist_state="session",
        help="XWP split in two: removing each pixel (XWP with a zero initial state = zero Occlusion) and the "
        "effect of the random initial weights x_i·W0_i (docs/evaluation.md).",
    ):
        return
    x = model_input(x, entry.model)
    problem = method_problem("xwp", entry.has_initial, entry.model, x)
    if problem:
        st.info(f"Not available for this model: {problem}", icon=":material/info:")
        return
    try:
        eff = initial_state_effect(entry.model, x, ex.target, entry.initial_model, ex.space)
    except XWPError as err:
        st.info(f"Not available for this model: {err}", icon=":material/info:")
        return
    zero = ZERO_STATE_LABEL[ex.space]
    diff = f"XWP − {zero.replace(' × ', '·')}"
    maps = {"XWP": eff.xwp, zero: eff.zero_state, diff: eff.difference}
    maps = {k: v.reshape(x.shape[-2:]).cpu().numpy() for k, v in maps.items()}
    limit = plots.symmetric_limit(*maps.values())
    for col, (label, a) in zip(st.columns(3, gap="small"), maps.items(), strict=True):
        col.image(png(plots.heatmap_rgb(a, limit, scale=5)), caption=f"{label} · ±{limit:.2g}", width="stretch")
    share = float(np.linalg.norm(maps[diff]) / max(float(np.linalg.norm(maps["XWP"])), 1e-300))
    rho = float(eff.spearman[0])
    agree = "undefined (too few pixels or a constant map)" if np.isnan(rho) else f"{rho:.2f}"
    st.caption(
        f"XWP puts pixel i's first-layer weights back to their initial values W0_i. That removes the pixel (middle: "
        f"XWP with a zero initial state, exactly {zero} with baseline 0) and adds the random initial projection "
        f"x_i·W0_i (right: its effect, {share:.0%} of XWP's size). Spearman correlation of XWP and {zero} on the "
        f"{int(eff.pixels[0])} non-zero pixels: {agree}. One colour scale for the three maps."
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

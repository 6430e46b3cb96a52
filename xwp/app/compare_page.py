"""The Compare page's glue: run an evaluation with a progress bar and keep it across page switches."""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st
import torch

from xwp.app.session import COMPARE_KEY, SessionModel
from xwp.app.shared import test_set
from xwp.comparison import comparison_figures as _figures
from xwp.comparison import plan
from xwp.evaluation import check_request, evaluate
from xwp.explanation import method_problems
from xwp.train import predict


def run_comparison(entry: SessionModel, methods: Sequence[str], n: int, seed: int) -> None:
    """Evaluate ``methods`` on ``n`` test images with a progress bar; keep the result in the session."""
    data = test_set(entry)
    usable, skipped = plan(methods, entry.has_initial, entry.model, data.images[:1])
    for problem in skipped.values():
        st.info(problem, icon=":material/info:")
    check_request(data, usable, n)  # before the progress bar
    bar = st.progress(0.0, text="Starting…")

    def progress(fraction: float, message: str) -> None:
        bar.progress(fraction, text=f"Evaluating: {message}")

    t0 = time.perf_counter()
    ev = evaluate(entry.model, data, usable, n=n, seed=seed, initial_model=entry.initial_model, progress=progress)
    bar.empty()
    images = torch.from_numpy(ev.examples["images"])
    st.session_state[COMPARE_KEY] = {
        "uid": entry.uid,
        "model": entry.name,
        "dataset": entry.dataset_label(),
        "seconds": time.perf_counter() - t0,
        "evaluation": ev,
        "predictions": predict(entry.model, images).numpy(),
    }


def unavailable(entry: SessionModel) -> dict[str, str]:
    """``{method: why it does not apply}`` for the active model, to mark them in the method picker."""
    return method_problems(entry.model, entry.has_initial)


def comparison() -> dict | None:
    """The last comparison of this session (None if there is none)."""
    return st.session_state.get(COMPARE_KEY)


def comparison_figures(result: dict) -> dict[str, bytes]:
    """Deletion curves, insertion curves and the heatmap grid of a comparison as PNG (rendered once)."""
    if "figures" not in result:
        result["figures"] = _figures(result["evaluation"], result["dataset"], result["predictions"])
    return result["figures"]

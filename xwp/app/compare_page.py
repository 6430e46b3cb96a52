"""The Compare page's glue: an evaluation as a job (progress, Stop, outlives page switches), its result kept."""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st
import torch

from xwp.app import jobs
from xwp.app.session import COMPARE_KEY, SessionModel, flash
from xwp.app.shared import test_set
from xwp.comparison import comparison_figures as _figures
from xwp.comparison import plan
from xwp.compute import JobCancelled, TaskContext
from xwp.evaluation import check_request, evaluate
from xwp.train import predict


def run_comparison(entry: SessionModel, methods: Sequence[str], n: int, seed: int) -> None:
    """Start evaluating ``methods`` on ``n`` test images as a job of this session, then watch it.

    The job runs on the compute executor at ``BACKGROUND`` priority and outlives page
    switches; its result becomes this session's comparison when it ends (:func:`_collect`).
    A new comparison stops the session's previous one.
    """
    usable, skipped = plan(methods, entry.has_initial)
    for problem in skipped.values():
        st.info(problem, icon=":material/info:")
    data = test_set(entry)
    check_request(data, usable, n)  # before the job starts
    owner = jobs.owner()
    for old in jobs.running(owner, "comparison"):
        jobs.stop(owner, old.id)
    model, initial, uid, name, label = entry.model, entry.initial_model, entry.uid, entry.name, entry.dataset_label()

    def task(ctx: TaskContext, record: jobs.JobRecord) -> dict:
        def progress(fraction: float, message: str) -> None:
            ctx.tick((fraction, f"Evaluating: {message}"))

        t0 = time.perf_counter()
        ev = evaluate(model, data, usable, n=n, seed=seed, initial_model=initial, progress=progress)
        images = torch.from_numpy(ev.examples["images"])
        return {
            "uid": uid,
            "model": name,
            "dataset": label,
            "seconds": time.perf_counter() - t0,
            "evaluation": ev,
            "predictions": predict(model, images).numpy(),
        }

    jobs.start(owner, "comparison", f"comparison on {n} images", task, collect=_collect)
    watch_comparison()


def watch_comparison() -> None:
    """While a comparison of this session runs: its progress and a Stop button, until it ends.

    Leaving the page ends only this watching, not the comparison (the sidebar keeps showing it).
    """
    owner = jobs.owner()
    records = jobs.running(owner, "comparison")
    if not records:
        return
    record = records[-1]
    jobs.stop_button(record, key=f"compare_stop_{record.id}", label="Stop comparison")
    bar = st.progress(record.fraction, text=record.message)
    while not record.done:
        time.sleep(0.2)
        bar.progress(record.fraction, text=record.message)
    bar.empty()
    jobs.collect(owner)


def _collect(record: jobs.JobRecord) -> None:
    """In the owner's next run: keep the comparison's result (or say why there is none)."""
    result, error = record.outcome()
    if isinstance(error, JobCancelled):
        flash("The comparison was stopped; the previous results (if any) are kept.")
    elif error is not None:
        st.error(f"The comparison failed: {jobs.describe(error)}", icon=":material/error:")
    else:
        st.session_state[COMPARE_KEY] = result


def comparison() -> dict | None:
    """The last comparison of this session (None if there is none)."""
    return st.session_state.get(COMPARE_KEY)


def comparison_figures(result: dict) -> dict[str, bytes]:
    """Deletion curves, insertion curves and the heatmap grid of a comparison as PNG (rendered once)."""
    if "figures" not in result:
        result["figures"] = _figures(result["evaluation"], result["dataset"], result["predictions"])
    return result["figures"]

"""The Compare page's glue: an evaluation as a job, method by method; finished methods kept, Stop and Resume.

A comparison is stored in the session as soon as it starts and grows one method at a time.
It runs as a job on the compute executor (:mod:`xwp.app.jobs`), so a page switch does not
stop it: the sidebar shows its progress with a Stop button, the Compare page shows its
progress under its own Stop. Stop keeps every finished method; Resume evaluates the others
in a new job. When every method is done, the job saves the comparison to the workspace
(also when its tab was closed meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st
import torch

from xwp.app import jobs, safe, workspace_glue
from xwp.app.internals import run_superseded
from xwp.app.keys import COMPARE_KEY
from xwp.app.session import SessionModel, flash
from xwp.app.shared import dataset, test_set
from xwp.attribution import METHODS
from xwp.data.datasets import ImageSet
from xwp.evaluation.protocol import Evaluation, check_request, evaluate
from xwp.serve.comparison import Comparison, Status, plan
from xwp.serve.compute import JobCancelled, TaskContext
from xwp.serve.explanation import method_problems
from xwp.serve.workspace import Workspace
from xwp.train import predict

#: re-runs per image for max-sensitivity on the page (the CLI's default is 5)
SENSITIVITY_SAMPLES = 3
#: how often the Compare page redraws a running comparison's progress bar (seconds)
POLL_SECONDS = 0.2


def start_comparison(
    entry: SessionModel, methods: Sequence[str], n: int, seed: int, outputs: Sequence[str], removal: str
) -> None:
    """Check the request and store a new, empty comparison of ``methods`` (random added) as running.

    The session's previous comparison is stopped; :func:`continue_comparison` starts the job.
    """
    data = test_set(entry)
    usable, skipped = plan(methods, entry.has_initial, entry.model, data.images[:1])
    for problem in skipped.values():
        st.info(problem, icon=":material/info:")
    check_request(data, usable, n, list(outputs), [removal])  # before anything is stored
    stop_comparison()
    st.session_state[COMPARE_KEY] = Comparison(
        uid=entry.uid,
        model=entry.name,
        dataset=entry.dataset_label(),
        n=n,
        seed=seed,
        outputs=list(outputs),
        removal=removal,
        methods=usable,
        pending=list(usable),
        parts=[],
        seconds=0.0,
        status=Status.RUNNING,
    )


def _train_mean(entry: SessionModel) -> torch.Tensor:
    """The per-pixel mean of the model's training split (for the ``mean`` removal)."""
    name = entry.meta["dataset"]
    kind, where = safe.test_source(entry.uid, name)  # never a folder the checkpoint's metadata names
    train = safe.upload_split(where, "train") if kind == "upload" else dataset(name, "train", where)
    return train.images.double().mean(0).reshape(-1)


def _job(result: Comparison) -> jobs.JobRecord | None:
    """The job that evaluates ``result`` (None when there is none, or it ended and was collected)."""
    job_id = result.job_id
    return jobs.registry().get(jobs.owner(), job_id) if job_id else None


def continue_comparison(entry: SessionModel) -> None:
    """Give a running comparison a job if it has none, and show its progress until it ends.

    Leaving the page ends only this watching: the job goes on, the sidebar shows it. A
    comparison of another model than the active one is not restarted (it is marked stopped).
    """
    result = comparison()
    if result is None:  # a reload of the workspace while one of its comparisons runs: show that one
        running = jobs.running(jobs.owner(), "comparison")
        if not running or "result" not in running[-1].extra:
            return
        result = st.session_state[COMPARE_KEY] = running[-1].extra["result"]
    if not result.running:
        return
    record = _job(result)
    if record is None:
        if result.uid != entry.uid:  # another model is active now: never mix two models' scores
            result.stop()
            return
        record = _start_job(entry, result)
    bar = st.progress(record.fraction, text=record.message)
    follow(record, bar)  # a rerun (a click, a page switch) takes over here
    bar.empty()
    record.extra["watched"] = True  # its end was seen here: no toast about it
    jobs.collect()


def follow(
    record: jobs.JobRecord,
    bar: Any,
    poll: float = POLL_SECONDS,
    sleep: Callable = time.sleep,
    superseded: Callable[[], bool] = run_superseded,
) -> int:
    """Redraw ``bar`` (an ``st.progress``) whenever ``record``'s progress changes, until it ends; returns the redraws.

    Only changes are sent: each redraw costs the browser a render, and a comparison waiting
    in the compute queue does not move. Redrawing every poll regardless, 3 tabs watching
    queued comparisons cost their browser 0.11 CPU-seconds a second (docs/app.md, "What a
    stroke costs the browser"). When Streamlit asks this run to stop or rerun (a click, a
    page switch), the bar is drawn anyway: a Streamlit call is where that request takes over.
    """
    shown, redraws = (record.fraction, record.message), 0
    while not record.done:
        sleep(poll)
        now = (record.fraction, record.message)
        if now != shown or superseded():
            bar.progress(now[0], text=now[1])
            redraws += now != shown
            shown = now
    return redraws


def _start_job(entry: SessionModel, result: Comparison) -> jobs.JobRecord:
    """Start the job that evaluates ``result``'s pending methods of ``entry`` (it fills ``result`` in place)."""
    data = test_set(entry)
    train_mean = _train_mean(entry) if result.removal == "mean" else None
    task = _comparison_task(entry.model, entry.initial_model, data, train_mean, result, workspace_glue.workspace())
    label = f"comparison of {len(result.methods)} methods on {result.n} images"
    record = jobs.start(jobs.owner(), "comparison", label, task, collect=_collect)
    record.extra["result"] = result
    result.set_job(record.id)
    return record


def _comparison_task(
    model: torch.nn.Module,
    initial_model: torch.nn.Module | None,
    data: ImageSet,
    train_mean: torch.Tensor | None,
    result: Comparison,
    ws: Workspace | None,
):
    """The job's function: evaluate the pending methods one at a time, storing each as it finishes; then save.

    Runs on the executor's worker (no Streamlit calls). Stop raises
    :class:`~xwp.serve.compute.JobCancelled` at the next batch; the finished methods stay in ``result``.
    Returns None when the comparison was saved to ``ws``, else why not.
    """

    def run(ctx: TaskContext, record: jobs.JobRecord) -> str | None:
        total = len(result.methods)
        try:
            for name in list(result.pending):
                k = len(result.parts)
                ctx.tick((k / total, f"method {k + 1} of {total}"))

                def progress(fraction: float, message: str, k: int = k) -> None:
                    ctx.tick(((k + fraction) / total, f"Evaluating {message} · method {k + 1} of {total}"))

                t0 = time.perf_counter()
                ev = evaluate(
                    model,
                    data,
                    [name],
                    n=result.n,
                    seed=result.seed,
                    initial_model=initial_model,
                    progress=progress,
                    outputs=result.outputs,
                    removals=[result.removal],
                    train_mean=train_mean,
                    sensitivity_samples=SENSITIVITY_SAMPLES,
                )
                predictions = None
                if result.predictions is None:  # the grid's predicted classes, from the model that was evaluated
                    predictions = predict(model, torch.from_numpy(ev.examples["images"])).numpy()
                result.add_part(ev, time.perf_counter() - t0, name, predictions)
        except BaseException as e:
            # the finished methods stay; the others can be resumed
            result.stop(None if isinstance(e, JobCancelled) else jobs.describe(e))
            raise
        result.finish()
        return workspace_glue.save_comparison_to(ws, result)  # survives a reload, listed in the sidebar

    return run


def _collect(record: jobs.JobRecord) -> None:
    """In the owner's next run: say how the comparison ended; a session without a comparison shows this one."""
    result = record.extra.get("result")
    if result is None:  # stopped before it was handed its comparison: nothing to report
        return
    problem, error = record.outcome()
    if isinstance(error, JobCancelled):
        flash("The comparison was stopped; its finished methods are kept.")
    elif error is not None:
        flash(f"The comparison failed: {safe.md(jobs.describe(error), 300)}")
    else:
        if problem:
            result.note_save_problem(problem)
        if not record.extra.get("watched"):
            flash(f"The {record.label} finished: see the Compare page.")
    if comparison() is None:
        st.session_state[COMPARE_KEY] = result


def stop_comparison() -> None:
    """Stop a running comparison: its job ends at the next batch, the finished methods stay and can be resumed."""
    result = comparison()
    if result is None or not result.stop():
        return
    record = _job(result)
    if record is not None:
        jobs.stop(record.owner, record.id)


def resume_comparison() -> None:
    """Mark a stopped comparison running again (:func:`continue_comparison` starts a job for its pending methods)."""
    result = comparison()
    if result is None or not result.resumable:
        return
    record = _job(result)
    if record is not None and not record.done:
        flash("The comparison is still stopping; press Resume again in a moment.")
        return
    result.resume()


def unavailable(entry: SessionModel) -> dict[str, str]:
    """``{method: why it does not apply}`` for the active model, to mark them in the method picker."""
    return method_problems(entry.model, entry.has_initial)


def comparison() -> Comparison | None:
    """The last comparison of this session (None if there is none)."""
    return st.session_state.get(COMPARE_KEY)


def evaluation(result: Comparison) -> Evaluation | None:
    """The finished methods of a comparison as one :class:`Evaluation` (None before the first finishes)."""
    return result.combined_evaluation()


def status_text(result: Comparison) -> str | None:
    """One line on an unfinished comparison (None when it is done)."""
    now = result.snapshot()  # parts, pending and status as one view: the job may be adding a method
    done, total = len(now.parts), len(now.methods)
    left = ", ".join(METHODS[m].label for m in now.pending)
    if now.status is Status.STOPPED:
        why = f" It failed: {safe.md(now.error, 300)}" if now.error else ""
        return f"Stopped after {done} of {total} methods; not evaluated: {left}.{why}"
    if now.status is Status.RUNNING:
        return f"Running: {done} of {total} methods finished; next: {left}."
    return None


def comparison_figures(result: Comparison, view: tuple) -> dict[str, bytes]:
    """Curves and heatmap grid of a comparison as PNG for one view (output, removal, correct only, x-max, log x).

    Only the latest view's figures are kept (they are re-drawn when the view changes).
    """
    return result.figures_for(view)

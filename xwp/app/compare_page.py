"""The Compare page's glue: run an evaluation method by method, keep what finished, stop and resume.

A comparison is stored in the session as soon as it starts and grows one method at a time,
so a page switch, a Stop or a widget click in the middle keeps every finished method. A
comparison still marked running continues when the page is shown again; Stop marks it
stopped (its unfinished methods can be resumed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st
import torch

from xwp.app import safe, workspace_glue
from xwp.app.session import COMPARE_KEY, SessionModel
from xwp.app.shared import dataset, test_set
from xwp.attribution import METHODS
from xwp.comparison import comparison_figures as _figures
from xwp.comparison import plan
from xwp.evaluation import Evaluation, check_request, combine, evaluate
from xwp.explanation import method_problems
from xwp.train import predict

#: re-runs per image for max-sensitivity on the page (the CLI's default is 5)
SENSITIVITY_SAMPLES = 3


def start_comparison(
    entry: SessionModel, methods: Sequence[str], n: int, seed: int, outputs: Sequence[str], removal: str
) -> None:
    """Check the request and store a new, empty comparison of ``methods`` (random added) as running."""
    data = test_set(entry)
    usable, skipped = plan(methods, entry.has_initial, entry.model, data.images[:1])
    for problem in skipped.values():
        st.info(problem, icon=":material/info:")
    check_request(data, usable, n, list(outputs), [removal])  # before anything is stored
    st.session_state[COMPARE_KEY] = {
        "uid": entry.uid,
        "model": entry.name,
        "dataset": entry.dataset_label(),
        "n": n,
        "seed": seed,
        "outputs": list(outputs),
        "removal": removal,
        "methods": usable,
        "pending": list(usable),
        "parts": [],
        "seconds": 0.0,
        "status": "running",
    }


def _train_mean(entry: SessionModel) -> torch.Tensor:
    """The per-pixel mean of the model's training split (for the ``mean`` removal)."""
    name = entry.meta["dataset"]
    kind, where = safe.test_source(entry.uid, name)  # never a folder the checkpoint's metadata names
    train = safe._upload_split(where, "train") if kind == "upload" else dataset(name, "train", where)
    return train.images.double().mean(0).reshape(-1)


def continue_comparison(entry: SessionModel) -> None:
    """Evaluate the pending methods one at a time, storing each as it finishes; mark the comparison done."""
    result = comparison()
    if result is None or result["status"] != "running":
        return
    if result["uid"] != entry.uid:  # another model is active now: never mix two models' scores
        result["status"] = "stopped"
        return
    data = test_set(entry)
    train_mean = _train_mean(entry) if result["removal"] == "mean" else None
    total = len(result["methods"])
    bar = st.progress(len(result["parts"]) / total, text="Starting…")
    for name in list(result["pending"]):
        k = len(result["parts"])

        def progress(fraction: float, message: str, k: int = k) -> None:
            bar.progress((k + fraction) / total, text=f"Evaluating {message} · method {k + 1} of {total}")

        t0 = time.perf_counter()
        ev = evaluate(
            entry.model,
            data,
            [name],
            n=result["n"],
            seed=result["seed"],
            initial_model=entry.initial_model,
            progress=progress,
            outputs=result["outputs"],
            removals=[result["removal"]],
            train_mean=train_mean,
            sensitivity_samples=SENSITIVITY_SAMPLES,
        )
        if "predictions" not in result:  # the grid's predicted classes, from the model that was evaluated
            result["predictions"] = predict(entry.model, torch.from_numpy(ev.examples["images"])).numpy()
        result["parts"].append(ev)
        result["pending"].remove(name)
        result["seconds"] += time.perf_counter() - t0
        for key in ("combined", "figures", "figures_view"):
            result.pop(key, None)
    bar.empty()
    result["status"] = "done"
    problem = workspace_glue.save_comparison(result)  # survives a reload, listed in the sidebar
    if problem:
        st.warning(problem, icon=":material/warning:")


def stop_comparison() -> None:
    """Mark a running comparison stopped: the finished methods stay, the others can be resumed."""
    result = comparison()
    if result is not None and result["status"] == "running":
        result["status"] = "stopped"


def resume_comparison() -> None:
    """Mark a stopped comparison running again (its pending methods run on this page)."""
    result = comparison()
    if result is not None and result["status"] == "stopped" and result["pending"]:
        result["status"] = "running"


def unavailable(entry: SessionModel) -> dict[str, str]:
    """``{method: why it does not apply}`` for the active model, to mark them in the method picker."""
    return method_problems(entry.model, entry.has_initial)


def comparison() -> dict | None:
    """The last comparison of this session (None if there is none)."""
    return st.session_state.get(COMPARE_KEY)


def evaluation(result: dict) -> Evaluation | None:
    """The finished methods of a comparison as one :class:`Evaluation` (None before the first finishes)."""
    if not result["parts"]:
        return None
    if "combined" not in result:
        result["combined"] = combine(result["parts"])
    return result["combined"]


def status_text(result: dict) -> str | None:
    """One line on an unfinished comparison (None when it is done)."""
    done, total = len(result["parts"]), len(result["methods"])
    left = ", ".join(METHODS[m].label for m in result["pending"])
    if result["status"] == "stopped":
        return f"Stopped after {done} of {total} methods; not evaluated: {left}."
    if result["status"] == "running":
        return f"Running: {done} of {total} methods finished; next: {left}."
    return None


def comparison_figures(result: dict, view: tuple) -> dict[str, bytes]:
    """Curves and heatmap grid of a comparison as PNG for one view (output, removal, correct only, x-max, log x).

    Only the latest view's figures are kept (they are re-drawn when the view changes).
    """
    if result.get("figures_view") != view or "figures" not in result:
        output, removal, correct, x_max, log_x = view
        result["figures"] = _figures(
            evaluation(result), result["dataset"], result.get("predictions"), output, removal, correct, x_max, log_x
        )
        result["figures_view"] = view
    return result["figures"]

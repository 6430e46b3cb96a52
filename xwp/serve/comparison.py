"""The Compare page's computations without Streamlit: methods to run, the table, significance, figures, CSV.

:func:`xwp.evaluation.evaluate` does the work; this module chooses the methods (the random
order is always added as the reference every method must beat), shows one output space and
removal at a time (mean, median and bootstrap 95 % interval per metric, best mean in bold),
the Holm-corrected paired tests as a matrix and as sentences, and draws the curves. Every
view takes ``correct_only``, so the toggle filters the table, the curves, their legend,
the tests and the CSV alike.

:class:`Comparison` is one comparison as the Compare page keeps it while a job fills it in
method by method: the worker thread and the page change it only under its one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp.attribution import METHODS
from xwp.errors import XWPError
from xwp.evaluation import stats
from xwp.evaluation.metrics import METRICS, PINNED
from xwp.evaluation.protocol import Evaluation, combine, format_table
from xwp.serve.explanation import method_problem
from xwp.viz import plots

#: the reference row: pixels removed in a random order
REFERENCE = "random"
#: the Compare table's column groups: how faithful a map is to the model; how stable and how readable it is
TABLE_GROUPS = {
    "Faithfulness": ("deletion_auc", "insertion_auc", "srg", "average_drop", "faithfulness_correlation"),
    "Robustness and readability": ("max_sensitivity", "sparseness", "complexity"),
    "All": tuple(METRICS),
}
#: y-axis label of the curves per output space
SCORE_LABEL = {
    "softmax": "p(true class)",
    "logits": "logit of the true class",
    "log-odds": "log-odds of the true class",
}


def plan(
    methods: Sequence[str], has_initial: bool, model: nn.Module | None = None, inputs: torch.Tensor | None = None
) -> tuple[list[str], dict[str, str]]:
    """The methods to evaluate (``methods`` that apply, plus :data:`REFERENCE`) and why the others are left out.

    With ``model`` (and example ``inputs``) each method's own check is asked too (e.g. Pathwise needs ReLU).
    """
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise XWPError("choose at least one method")
    problems = {m: method_problem(m, has_initial, model, inputs) for m in methods}
    usable = [m for m in methods if problems[m] is None]
    skipped = {m: problems[m] for m in methods if m not in usable}
    if REFERENCE not in usable:
        usable.append(REFERENCE)  # the order every method must beat
    return usable, skipped


def case_table(ev: Evaluation, output: str, removal: str, correct_only: bool = False) -> pd.DataFrame:
    """The summary rows of one output space and removal, one per method."""
    t = ev.summary(correct_only)
    return t[(t["output"] == output) & (t["removal"] == removal)].reset_index(drop=True)


def comparison_table(
    ev: Evaluation,
    correct_only: bool = False,
    output: str | None = None,
    removal: str | None = None,
    medians: bool = True,
    group: str = "All",
) -> pd.io.formats.style.Styler:
    """One output space and removal: mean [95 % CI] and median per metric, best mean in bold, images, s / image.

    ``group``: a key of :data:`TABLE_GROUPS`, the metrics shown; a group other than "All" leaves
    out the images column when every method has the same number (say it beside the table).
    ``medians=False`` leaves the median columns out. All eight metrics with medians make 19
    columns; the Faithfulness group without medians 7, which a 1280-pixel screen shows beside
    the sidebar (tests/test_browser.py measures it).
    """
    table = case_table(ev, output or ev.outputs[0], removal or ev.removals[0], correct_only)
    if group not in TABLE_GROUPS:
        raise XWPError(f"unknown metric group {group!r}; one of {', '.join(TABLE_GROUPS)}")
    out = format_table(table, metrics_=TABLE_GROUPS[group])
    if not medians:
        out = out[[c for c in out.columns if not c.endswith(" median")]]
    if group == "All" or table["n"].nunique() != 1:
        out["images"] = table["n"].to_numpy()
    styles = pd.DataFrame("", index=out.index, columns=out.columns)
    contenders = (table["method"] != REFERENCE).to_numpy() & (table["n"] > 0).to_numpy()
    best_style = "font-weight: bold; background-color: rgba(198, 40, 40, 0.12)"
    for m, spec in METRICS.items():
        column = f"{spec.label} {spec.arrow}"
        if column not in out.columns:
            continue
        values = pd.Series(np.where(contenders, table[f"{m}_mean"].to_numpy(), np.nan))
        if values.notna().any():
            best = values.idxmax() if spec.higher_is_better else values.idxmin()
            styles.loc[best, column] = best_style
    return out.style.apply(lambda _: styles, axis=None)


def significance_matrix(
    ev: Evaluation, metric: str, output: str, removal: str, correct_only: bool = False
) -> pd.DataFrame:
    """Method x method: ``>`` row significantly better (Holm-corrected Wilcoxon), ``<`` worse, ``=`` neither."""
    tests = ev.significance(metric, output, removal, correct_only)
    matrix = stats.significance_matrix(tests, ev.methods)
    labels = [METHODS[m].label for m in matrix.index]
    matrix.index, matrix.columns = labels, labels
    return matrix


def statements(ev: Evaluation, output: str, removal: str, correct_only: bool = False) -> list[str]:
    """The significant differences of one output space and removal as sentences, pinned metrics in order."""
    labels = {m: METHODS[m].label for m in ev.methods}
    out = []
    for m in PINNED:
        if m in ev.per_image and ev.per_image[m].notna().any():
            tests = ev.significance(m, output, removal, correct_only)
            out += stats.statements(tests, METRICS[m].label, labels)
    return out


def csv_bytes(ev: Evaluation, correct_only: bool = False) -> bytes:
    """The full summary (every method, output space and removal) as CSV, filtered like the page."""
    return ev.summary(correct_only).to_csv(index=False, float_format="%.6g").encode()


def comparison_figures(
    ev: Evaluation,
    dataset_label: str,
    predictions: np.ndarray | None = None,
    output: str | None = None,
    removal: str | None = None,
    correct_only: bool = False,
    fraction_max: float = 1.0,
    log_x: bool = False,
) -> dict[str, bytes]:
    """Deletion curves, insertion curves (of the images the table uses) and the heatmap grid as PNG.

    ``predictions``: the model's classes of ``ev.examples["images"]`` (shown in the grid).
    """
    output, removal = output or ev.outputs[0], removal or ev.removals[0]
    kept = ev.summary(correct_only)["n"].max() if len(ev.per_image) else 0
    which = "correctly classified " if correct_only else ""
    sub = f"{dataset_label}, {kept} {which}test images, {output}, {removal} removal"
    ex = ev.examples
    dpi = plots.FIG_DPI
    out = {}
    for kind in ("deletion", "insertion"):
        curves = ev.curve_set(kind, output, removal, correct_only)
        fig = plots.curves_figure(
            {METHODS[m].label: c for m, c in curves.items()},
            kind,
            title=f"{kind.capitalize()} curves ({sub})",
            fraction_max=fraction_max,
            ylabel=SCORE_LABEL[output],
            log_x=log_x,
        )
        out[kind] = plots.png_bytes(fig, dpi)
    out["grid"] = plots.png_bytes(
        plots.method_grid(
            ex["images"],
            ex["labels"],
            ex["classes"],
            {METHODS[m].label: a for m, a in ex["attributions"].items()},
            predictions=predictions,
            size=1.5,
            title=f"Heatmaps ({ex.get('output', 'softmax')}; red: evidence for the true class)",
        ),
        dpi,
    )
    return out


class Status(str, Enum):
    """Where a :class:`Comparison` stands."""

    RUNNING = "running"  # a job evaluates its pending methods (or is about to be given one)
    STOPPED = "stopped"  # Stop was pressed or a method failed: the finished methods stay, Resume runs the others
    DONE = "done"  # every method is evaluated

    def __str__(self) -> str:
        """The plain value ("running"), as the dict this replaces stored it."""
        return self.value


class Snapshot(NamedTuple):
    """A consistent view of a :class:`Comparison`'s progress, taken under its lock."""

    status: Status
    methods: list[str]
    pending: list[str]
    parts: list[Evaluation]
    seconds: float
    error: str | None


@dataclass(eq=False)
class Comparison:
    """One comparison on the Compare page: its request, the methods evaluated so far, how it stands, page caches.

    A job's worker thread adds each finished method (:meth:`add_part`) while the page reads
    the comparison, so every change, by either thread, is made under :attr:`lock` (one lock,
    not reentrant: no method calls another while holding it); lists are replaced, never
    appended to in place, so a reader keeps a consistent list it already holds. Readers that
    need several fields to agree take a :meth:`snapshot`. ``status`` accepts a
    :class:`Status` or its value ("running"), and refuses any other string.
    """

    uid: str = ""  # the evaluated model's SessionModel.uid
    model: str = "?"  # its name
    dataset: str = "?"  # the label of its dataset
    n: int | None = None  # test images
    seed: int | None = None
    outputs: list[str] = field(default_factory=list)  # output spaces
    removal: str = "zero"
    methods: list[str] = field(default_factory=list)  # every method to evaluate, the random reference included
    pending: list[str] = field(default_factory=list)  # those not evaluated yet
    parts: list[Evaluation] = field(default_factory=list)  # one Evaluation per finished method
    seconds: float = 0.0  # evaluation time so far
    status: Status = Status.RUNNING
    job_id: str | None = None  # the job that evaluates it (xwp.app.jobs)
    predictions: np.ndarray | None = None  # the model's classes of the grid's images
    error: str | None = None  # why the last job failed
    save_problem: str | None = None  # why it was not saved to the workspace
    saved_id: str | None = None  # its id in the workspace once saved
    evaluation: Evaluation | None = None  # a saved comparison's evaluation, as loaded
    # the page's caches: the parts combined (and how many), the figures of the latest view
    combined: Evaluation | None = field(default=None, repr=False)
    combined_of: int = field(default=0, repr=False)
    figures: dict[str, bytes] | None = field(default=None, repr=False)
    figures_view: tuple | None = field(default=None, repr=False)
    figures_of: Evaluation | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """Refuse a status that is not a :class:`Status` (nor one's value)."""
        if name == "status":
            try:
                value = Status(value)
            except ValueError:
                raise ValueError(f"unknown comparison status {value!r}; one of {[s.value for s in Status]}") from None
        object.__setattr__(self, name, value)

    @classmethod
    def saved(cls, ev: Evaluation, predictions: np.ndarray | None, info: dict, saved_id: str) -> Comparison:
        """A comparison loaded from the workspace (``info``: what was saved with it), done."""
        seconds = info.get("seconds")
        return cls(
            uid=str(info.get("uid") or ""),
            model=str(info.get("model") or "?"),
            dataset=str(info.get("dataset") or "?"),
            seconds=float(seconds) if isinstance(seconds, int | float) else 0.0,
            evaluation=ev,
            predictions=predictions,
            saved_id=saved_id,
            n=ev.settings.get("n"),
            seed=ev.settings.get("seed"),
            outputs=ev.outputs,
            removal=ev.removals[0] if ev.removals else "zero",
            methods=ev.methods,
            pending=[],
            parts=[ev],
            status=Status.DONE,
        )

    def snapshot(self) -> Snapshot:
        """Status, methods, pending, parts, seconds and error as one consistent view."""
        with self.lock:
            return Snapshot(self.status, self.methods, self.pending, self.parts, self.seconds, self.error)

    @property
    def running(self) -> bool:
        """Whether it is running."""
        return self.status is Status.RUNNING

    @property
    def resumable(self) -> bool:
        """Whether it is stopped with methods left to evaluate."""
        with self.lock:
            return self.status is Status.STOPPED and bool(self.pending)

    def add_part(self, ev: Evaluation, seconds: float, name: str, predictions: np.ndarray | None = None) -> None:
        """Method ``name`` finished as ``ev`` in ``seconds``; ``predictions``: the grid's classes, kept if none are."""
        with self.lock:
            if predictions is not None and self.predictions is None:
                self.predictions = predictions
            self.parts = [*self.parts, ev]  # new lists: the page may be reading the old ones
            self.pending = [m for m in self.pending if m != name]
            self.seconds += seconds

    def stop(self, error: str | None = None) -> bool:
        """Mark it stopped (a done one stays done), ``error``: why it failed; returns whether it was running."""
        with self.lock:
            if error is not None:
                self.error = error
            was_running = self.status is Status.RUNNING
            if self.status is not Status.DONE:
                self.status = Status.STOPPED
            return was_running

    def finish(self) -> None:
        """Every method is evaluated."""
        with self.lock:
            self.status = Status.DONE

    def resume(self) -> bool:
        """Mark a stopped comparison with pending methods running again (its error forgotten); whether it was."""
        with self.lock:
            if self.status is not Status.STOPPED or not self.pending:
                return False
            self.error = None
            self.status = Status.RUNNING
            return True

    def set_job(self, job_id: str) -> None:
        """The job that evaluates its pending methods."""
        with self.lock:
            self.job_id = job_id

    def mark_saved(self, saved_id: str) -> None:
        """It was saved to the workspace as ``saved_id``."""
        with self.lock:
            self.saved_id = saved_id

    def note_save_problem(self, problem: str) -> None:
        """It could not be saved to the workspace: ``problem`` says why."""
        with self.lock:
            self.save_problem = problem

    def to_save(self) -> tuple[Evaluation | None, np.ndarray | None, dict[str, Any]]:
        """What the workspace saves: the evaluation (None before a method finished), the predictions, the info."""
        with self.lock:
            ev, predictions = self.evaluation, self.predictions
            info = {"model": self.model, "dataset": self.dataset, "seconds": self.seconds, "uid": self.uid}
        if ev is None:  # the page's combined parts (cached), not a second combine
            ev = self.combined_evaluation()
        return ev, predictions, info

    def combined_evaluation(self) -> Evaluation | None:
        """The finished methods as one :class:`Evaluation` (None before the first finishes).

        Kept with the number of parts it combines, so a method that finishes meanwhile (the
        job adds it) makes it combined again.
        """
        with self.lock:
            parts, combined, combined_of = self.parts, self.combined, self.combined_of
        if not parts:
            return None
        if combined is None or combined_of != len(parts):
            combined = combine(parts)  # outside the lock: the worker need not wait for it
            with self.lock:
                self.combined, self.combined_of = combined, len(parts)
        return combined

    def figures_for(self, view: tuple) -> dict[str, bytes]:
        """Curves and heatmap grid as PNG for one view (output, removal, correct only, x-max, log x).

        Only the latest view's figures are kept (they are re-drawn when the view changes).
        """
        ev = self.combined_evaluation()
        with self.lock:
            if self.figures is not None and self.figures_view == view and self.figures_of is ev:
                return self.figures
            predictions = self.predictions
        output, removal, correct, x_max, log_x = view
        drawn = comparison_figures(ev, self.dataset, predictions, output, removal, correct, x_max, log_x)
        with self.lock:
            self.figures, self.figures_view, self.figures_of = drawn, view, ev
        return drawn

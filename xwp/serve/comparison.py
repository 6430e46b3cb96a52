"""The Compare page's computations without Streamlit: methods to run, the table, significance, figures, CSV.

:func:`xwp.evaluation.evaluate` does the work; this module chooses the methods (the random
order is always added as the reference every method must beat), shows one output space and
removal at a time (mean, median and bootstrap 95 % interval per metric, best mean in bold),
the Holm-corrected paired tests as a matrix and as sentences, and draws the curves. Every
view takes ``correct_only``, so the toggle filters the table, the curves, their legend,
the tests and the CSV alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp.attribution import METHODS
from xwp.errors import XWPError
from xwp.evaluation import stats
from xwp.evaluation.metrics import METRICS, PINNED
from xwp.evaluation.protocol import Evaluation, format_table
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

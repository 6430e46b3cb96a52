"""The Compare page's computations without Streamlit: which methods run, Table 1 for display, the figures.

:func:`xwp.evaluation.evaluate` does the work; this module chooses the methods (the random
order is always added as the reference every method must beat), styles the table (best
value per metric in bold) and draws the deletion/insertion curves and the heatmap grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xwp import plots
from xwp.attribution import METHODS
from xwp.errors import XWPError
from xwp.evaluation import Evaluation, format_table
from xwp.explanation import method_problem
from xwp.metrics import METRICS

#: the reference row: pixels removed in a random order
REFERENCE = "random"


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


def comparison_table(ev: Evaluation, correct_only: bool = False) -> pd.io.formats.style.Styler:
    """Table 1 for display: mean ± std per metric (direction in the header), best in bold, seconds per image."""
    table = ev.table_correct() if correct_only else ev.table
    out = format_table(table)
    out["images"] = table["n"].to_numpy()
    styles = pd.DataFrame("", index=out.index, columns=out.columns)
    contenders = (table.index != REFERENCE) & (table["n"] > 0)
    best_style = "font-weight: bold; background-color: rgba(198, 40, 40, 0.12)"
    for m, spec in METRICS.items():
        values = pd.Series(np.where(contenders, table[f"{m}_mean"].to_numpy(), np.nan))
        if values.notna().any():
            best = values.idxmax() if spec.higher_is_better else values.idxmin()
            styles.loc[best, f"{spec.label} {spec.arrow}"] = best_style
    return out.style.apply(lambda _: styles, axis=None)


def comparison_figures(ev: Evaluation, dataset_label: str, predictions: np.ndarray | None = None) -> dict[str, bytes]:
    """Deletion curves, insertion curves and the heatmap grid of an evaluation as PNG.

    ``predictions``: the model's classes of ``ev.examples["images"]`` (shown in the grid).
    """
    labels = {m: METHODS[m].label for m in ev.deletion}
    sub = f"{dataset_label}, {ev.settings['n']} test images"
    ex = ev.examples
    dpi = plots.FIG_DPI
    return {
        "deletion": plots.png_bytes(
            plots.curves_figure(
                {labels[m]: c for m, c in ev.deletion.items()}, "deletion", title=f"Deletion curves ({sub})"
            ),
            dpi,
        ),
        "insertion": plots.png_bytes(
            plots.curves_figure(
                {labels[m]: c for m, c in ev.insertion.items()}, "insertion", title=f"Insertion curves ({sub})"
            ),
            dpi,
        ),
        "grid": plots.png_bytes(
            plots.method_grid(
                ex["images"],
                ex["labels"],
                ex["classes"],
                {labels[m]: a for m, a in ex["attributions"].items()},
                predictions=predictions,
                size=1.5,
                title="Heatmaps (red: evidence for the true class)",
            ),
            dpi,
        ),
    }

"""The Compare page's computations (xwp.comparison): method plan, styled Table 1, figures."""

from __future__ import annotations

import pytest
import torch

from xwp.comparison import REFERENCE, comparison_figures, comparison_table, plan
from xwp.errors import XWPError
from xwp.evaluation import evaluate
from xwp.metrics import METRICS

BOLD = "font-weight: bold"


def test_plan_adds_the_reference_and_says_why_methods_are_left_out():
    assert plan(["xwp", "ig", "xwp"], has_initial=True) == (["xwp", "ig", REFERENCE], {})
    usable, skipped = plan(["xwp", "ig", "xwpc", "random"], has_initial=False)
    assert usable == ["ig", "random"]
    assert list(skipped) == ["xwp", "xwpc"] and all("initial weights" in v for v in skipped.values())
    with pytest.raises(XWPError, match="at least one method"):
        plan([], has_initial=True)


def test_plan_asks_each_method_about_the_model():
    from xwp.models import MLP

    linear, images = MLP((784, 10), seed=0), torch.rand(1, 1, 28, 28)
    usable, skipped = plan(["pathwise", "ig"], has_initial=True, model=linear, inputs=images)
    assert usable == ["ig", REFERENCE] and list(skipped) == ["pathwise"] and "ReLU" in skipped["pathwise"]
    assert plan(["pathwise"], has_initial=True, model=MLP((784, 8, 10), seed=0), inputs=images) == (
        ["pathwise", REFERENCE],
        {},
    )


@pytest.fixture(scope="module")
def evaluation(typeface, trained):
    data = typeface[1].sample(200, seed=0)
    ev = evaluate(trained, data, ["xwp", "saliency", "random"], n=6, seed=0, initial_model=trained.initial_model())
    return ev


def _bold_cells(styler) -> set[tuple[str, str]]:
    """(method label, column) of the cells the styler makes bold."""
    styler._compute()  # runs the styling functions and fills ctx
    frame = styler.data
    cells = set()
    for (i, j), css in styler.ctx.items():
        if any(BOLD in f"{k}: {v}" for k, v in css):
            cells.add((frame.iloc[i]["method"], frame.columns[j]))
    return cells


@pytest.mark.parametrize("correct_only", [False, True])
def test_table_marks_the_best_method_per_metric(evaluation, correct_only):
    """The bold cell of each metric is the best mean in its direction among the methods, never the reference."""
    table = evaluation.table_correct() if correct_only else evaluation.table
    styler = comparison_table(evaluation, correct_only)
    assert list(styler.data["images"]) == list(table["n"])
    expected = set()
    for m, spec in METRICS.items():
        rows = [(name, row[f"{m}_mean"]) for name, row in table.iterrows() if name != REFERENCE and row["n"] > 0]
        if rows:
            best = (max if spec.higher_is_better else min)(rows, key=lambda r: r[1])[0]
            expected.add((table.loc[best].get("label", best), f"{spec.label} {spec.arrow}"))
    assert _bold_cells(styler) == expected
    assert len(expected) == len(METRICS)


def test_figures_are_pngs(evaluation):
    images = torch.from_numpy(evaluation.examples["images"])
    figures = comparison_figures(evaluation, "typeface digits", predictions=torch.zeros(len(images)).long().numpy())
    assert set(figures) == {"deletion", "insertion", "grid"}
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in figures.values())

"""The Compare page's computations (xwp.serve.comparison): method plan, styled Table 1, figures."""

from __future__ import annotations

import pytest
import torch

from xwp.errors import XWPError
from xwp.evaluation.metrics import METRICS
from xwp.evaluation.protocol import evaluate
from xwp.serve.comparison import (
    REFERENCE,
    case_table,
    comparison_figures,
    comparison_table,
    csv_bytes,
    plan,
    significance_matrix,
    statements,
)

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
    return evaluate(
        trained, data, ["xwp", "saliency", "random"], n=6, seed=0, initial_model=trained.initial_model(),
        sensitivity_samples=2,
    )  # fmt: skip


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
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_table_marks_the_best_method_per_metric(evaluation, correct_only, output):
    """The bold cell of each metric is the best mean in its direction among the methods, never the reference."""
    table = case_table(evaluation, output, "zero", correct_only)
    styler = comparison_table(evaluation, correct_only, output, "zero")
    assert list(styler.data["images"]) == list(table["n"])
    assert list(styler.data["method"]) == list(table["label"])
    expected = set()
    for m, spec in METRICS.items():
        rows = [(r.label, r[f"{m}_mean"]) for _, r in table.iterrows() if r.method != REFERENCE and r["n"] > 0]
        rows = [r for r in rows if r[1] == r[1]]  # NaN: not computed
        if rows:
            best = (max if spec.higher_is_better else min)(rows, key=lambda r: r[1])[0]
            expected.add((best, f"{spec.label} {spec.arrow}"))
    assert _bold_cells(styler) == expected
    assert len(expected) == len(METRICS)


def test_table_without_medians_keeps_the_means_and_their_bold(evaluation):
    full = comparison_table(evaluation, False, "softmax", "zero")
    short = comparison_table(evaluation, False, "softmax", "zero", medians=False)
    medians = [c for c in full.data.columns if c.endswith(" median")]
    assert medians and not any(c.endswith(" median") for c in short.data.columns)
    assert short.data.equals(full.data.drop(columns=medians))
    assert _bold_cells(short) == _bold_cells(full)


def test_table_groups_split_the_metrics(evaluation):
    full = comparison_table(evaluation, False, "softmax", "zero", medians=False).data
    seen = []
    for group in ("Faithfulness", "Robustness and readability"):
        part = comparison_table(evaluation, False, "softmax", "zero", medians=False, group=group).data
        # every method scored the same images: the count is left to the caption
        assert list(part.columns[:1]) == ["method"] and list(part.columns[-1:]) == ["s / image"]
        seen += list(part.columns[1:-1])
        assert part.equals(full[part.columns])
    assert sorted(seen) == sorted(full.columns[1:-2])  # the two groups cover every metric once
    assert list(full.columns[-2:]) == ["s / image", "images"]
    with pytest.raises(XWPError, match="unknown metric group"):
        comparison_table(evaluation, group="Speed")


def test_significance_matrix_and_statements_agree(evaluation):
    matrix = significance_matrix(evaluation, "deletion_auc", "softmax", "zero")
    assert list(matrix.index) == ["XWP", "Saliency", "Random"] and matrix.shape == (3, 3)
    tests = evaluation.significance("deletion_auc", "softmax", "zero")
    n_better = int((matrix == ">").to_numpy().sum())
    assert n_better == int(tests["significant"].sum())
    lines = statements(evaluation, "softmax", "zero")
    assert all("significantly better than" in s for s in lines)


def test_csv_has_every_case_and_follows_the_filter(evaluation):
    import io

    import pandas as pd

    full = pd.read_csv(io.BytesIO(csv_bytes(evaluation)))
    only = pd.read_csv(io.BytesIO(csv_bytes(evaluation, correct_only=True)))
    assert len(full) == 3 * 2 and list(full.columns[:3]) == ["method", "output", "removal"]
    correct = int(evaluation.per_image.drop_duplicates("image")["correct"].sum())
    assert (full["n"] == 6).all() and (only["n"] == correct).all()


def test_figures_are_pngs(evaluation):
    images = torch.from_numpy(evaluation.examples["images"])
    for kw in ({}, {"output": "logits", "correct_only": True, "fraction_max": 0.05, "log_x": True}):
        figures = comparison_figures(
            evaluation, "typeface digits", predictions=torch.zeros(len(images)).long().numpy(), **kw
        )
        assert set(figures) == {"deletion", "insertion", "grid"}
        assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in figures.values())

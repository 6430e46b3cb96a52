"""The evaluation protocol on any tensors: every (method, output, removal) row, the pinned columns, the filter.

``xwp.evaluate`` takes an :class:`~xwp.data.ImageSet`, which wraps any images and labels, so
these checks run it on a tiny float64 network and seven hand-made images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import random_trained_mlp
from xwp import evaluate, make_method
from xwp.data import ImageSet
from xwp.errors import XWPError
from xwp.evaluation import faithfulness as F
from xwp.evaluation import stats
from xwp.evaluation.metrics import PINNED
from xwp.evaluation.protocol import summarize
from xwp.evaluation.removal import make_removal
from xwp.study.run import removal_agreement


@pytest.fixture(scope="module")
def tiny():
    model = random_trained_mlp((16, 10, 6, 3), seed=5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 1, 4, 4, generator=g, dtype=torch.float64)
    x[x < 0.3] = 0.0
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    return model, ImageSet(x, y, ["a", "b", "c"], "tiny", "test")


def test_per_image_table_equals_direct_calls(tiny):
    model, data = tiny
    x, y = data.images, data.labels
    ev = evaluate(model, data, ["xwp", "random"], n=7, removals=("zero", "revert"), batch_size=3, sensitivity_samples=2)
    per = ev.per_image
    assert len(per) == 2 * 2 * 2 * 7
    row = per[(per.method == "xwp") & (per.output == "logits") & (per.removal == "revert")]
    attr = make_method("xwp", model, output="logits").attribute(x, target=y)
    want = F.per_image_scores(model, x, y, attr, make_removal("revert", model), "logits")
    np.testing.assert_allclose(row["srg"], want["srg"].numpy(), rtol=1e-10)
    np.testing.assert_allclose(row["faithfulness_correlation"], want["faithfulness_correlation"].numpy(), rtol=1e-10)
    assert per["correct"].dtype == bool and per["max_sensitivity"].notna().all()
    # max-sensitivity does not depend on the removal
    a = per[(per.method == "xwp") & (per.output == "softmax")]
    np.testing.assert_array_equal(
        a[a.removal == "zero"]["max_sensitivity"].to_numpy(), a[a.removal == "revert"]["max_sensitivity"].to_numpy()
    )


def test_summary_has_the_pinned_columns_and_the_filter_applies(tiny):
    model, data = tiny
    per = evaluate(model, data, ["xwp", "occlusion"], n=7, sensitivity_samples=0).per_image
    table = summarize(per, n_boot=100)
    assert list(table.columns[:3]) == ["method", "output", "removal"]
    for m in PINNED:
        for suffix in ("_mean", "_median", "_ci_low", "_ci_high"):
            assert f"{m}{suffix}" in table.columns
    assert len(table) == 4 and table["max_sensitivity_mean"].isna().all()
    only = summarize(per[per.correct], n_boot=100)
    assert (only["n"] == per[per.correct].groupby(["method", "output", "removal"]).size().to_numpy()).all()
    sub = per[(per.output == "softmax") & (per.removal == "zero")]
    tests = stats.paired_tests(sub, "deletion_auc", F.DIRECTIONS["deletion_auc"], stats.ALPHA)
    assert len(tests) == 1 and {"p_holm", "better"} <= set(tests.columns)


def test_ranking_agreement_between_removals(tiny):
    model, data = tiny
    per = evaluate(model, data, ["xwp", "occlusion", "random"], n=7, removals=("zero", "revert"), sensitivity_samples=0)
    agree = removal_agreement(per.per_image.assign(dataset="tiny", arch="mlp", seed=0), metrics=("srg",))
    assert len(agree) >= 1 and agree["spearman"].between(-1, 1).all()


def test_unknown_names_are_refused(tiny):
    model, data = tiny
    with pytest.raises(XWPError, match="unknown removal"):
        evaluate(model, data, ["xwp"], n=7, removals=("fog",))
    with pytest.raises(XWPError, match="unknown method"):
        evaluate(model, data, ["nope"], n=7)

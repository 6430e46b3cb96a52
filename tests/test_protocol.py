"""The protocol table: every (method, output, removal) row, the pinned columns, the correct-only filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import random_trained_mlp
from xwp import faithfulness as F
from xwp import make_method, protocol
from xwp.errors import XWPError
from xwp.removal import make_removal


@pytest.fixture(scope="module")
def tiny():
    model = random_trained_mlp((16, 10, 6, 3), seed=5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 1, 4, 4, generator=g, dtype=torch.float64)
    x[x < 0.3] = 0.0
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    return model, x, y


def test_per_image_table_equals_direct_calls(tiny):
    model, x, y = tiny
    per = protocol.score_methods(
        model, x, y, ["xwp", "random"], removals=("zero", "revert"), batch_size=3, steps=10, sensitivity_samples=2
    )
    assert len(per) == 2 * 2 * 2 * 7
    row = per[(per.method == "xwp") & (per.output == "logits") & (per.removal == "revert")]
    attr = make_method("xwp", model, output="logits").attribute(x, target=y)
    want = F.per_image_scores(model, x, y, attr, make_removal("revert", model), "logits", steps=10)
    np.testing.assert_allclose(row["srg"], want["srg"].numpy(), rtol=1e-10)
    np.testing.assert_allclose(row["faithfulness_correlation"], want["faithfulness_correlation"].numpy(), rtol=1e-10)
    assert per["correct"].dtype == bool and per["max_sensitivity"].notna().all()
    # max-sensitivity does not depend on the removal
    a = per[(per.method == "xwp") & (per.output == "softmax")]
    np.testing.assert_array_equal(
        a[a.removal == "zero"]["max_sensitivity"].to_numpy(), a[a.removal == "revert"]["max_sensitivity"].to_numpy()
    )


def test_summary_has_the_pinned_columns_and_the_filter_applies(tiny):
    model, x, y = tiny
    per = protocol.score_methods(model, x, y, ["xwp", "occlusion"], steps=8, sensitivity_samples=0)
    table = protocol.summary_table(per, n_boot=100)
    assert list(table.columns[:3]) == ["method", "output", "removal"]
    for m in protocol.PINNED:
        for suffix in ("_mean", "_median", "_ci_low", "_ci_high"):
            assert f"{m}{suffix}" in table.columns
    assert len(table) == 4 and table["max_sensitivity_mean"].isna().all()
    only = protocol.summary_table(per, correct_only=True, n_boot=100)
    assert (only["n"] == per[per.correct].groupby(["method", "output", "removal"]).size().to_numpy()).all()
    tests = protocol.significance(per, "deletion_auc", "softmax", "zero")
    assert len(tests) == 1 and {"p_holm", "better"} <= set(tests.columns)
    agree = protocol.ranking_agreement(per, "srg", "softmax")
    assert agree.shape == (1, 1)


def test_unknown_names_are_refused(tiny):
    model, x, y = tiny
    with pytest.raises(XWPError, match="unknown removal"):
        protocol.score_methods(model, x, y, ["xwp"], removals=("fog",))
    with pytest.raises(XWPError, match="unknown method"):
        protocol.score_methods(model, x, y, ["nope"])

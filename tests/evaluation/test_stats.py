"""xwp.evaluation.stats against slow references: a bootstrap loop, scipy on known data, Holm by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from xwp.evaluation import stats


def long_table(scores: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.concat(
        [pd.DataFrame({"method": m, "image": np.arange(len(v)), "score": v}) for m, v in scores.items()],
        ignore_index=True,
    )


def test_bootstrap_equals_a_plain_loop_over_the_same_draws():
    v = np.random.default_rng(1).exponential(size=57)
    low, high = stats.bootstrap_ci(v, n_boot=500, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, v.size, size=(500, v.size))  # one chunk: the same stream
    means = [float(np.mean([v[j] for j in row])) for row in idx]
    assert low == pytest.approx(np.percentile(means, 2.5), rel=1e-12)
    assert high == pytest.approx(np.percentile(means, 97.5), rel=1e-12)


def test_bootstrap_interval_is_close_to_the_normal_one_and_seeded():
    v = np.random.default_rng(0).normal(3.0, 2.0, size=2000)
    low, high = stats.bootstrap_ci(v, n_boot=2000, seed=0)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert low == pytest.approx(v.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(v.mean() + half, abs=0.15 * half)
    assert stats.bootstrap_ci(v, n_boot=300, seed=5) == stats.bootstrap_ci(v, n_boot=300, seed=5)
    assert stats.bootstrap_ci(v, n_boot=300, seed=5) != stats.bootstrap_ci(v, n_boot=300, seed=6)


def test_bootstrap_chunks_do_not_change_the_interval(monkeypatch):
    v = np.random.default_rng(2).normal(size=40)
    whole = stats.bootstrap_ci(v, n_boot=400, seed=1)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 40 * 7)  # 7 replicates per chunk
    chunked = stats.bootstrap_ci(v, n_boot=400, seed=1)
    # chunks draw the same stream row by row only when n is even; the intervals must agree closely anyway
    assert chunked[0] == pytest.approx(whole[0], abs=0.05) and chunked[1] == pytest.approx(whole[1], abs=0.05)


def test_summarize_columns_and_nan_handling():
    per = long_table({"a": np.array([1.0, 2.0, 3.0, np.nan]), "b": np.array([0.0, 0.0, 1.0, 1.0])})
    t = stats.summarize(per, ["score"], n_boot=200)
    assert list(t.columns) == ["score_mean", "score_median", "score_ci_low", "score_ci_high", "n"]
    assert t.loc["a", "score_mean"] == 2.0 and t.loc["a", "score_median"] == 2.0
    assert t.loc["b", "score_mean"] == 0.5
    assert 1.0 <= t.loc["a", "score_ci_low"] <= 2.0 <= t.loc["a", "score_ci_high"] <= 3.0
    assert list(t.index) == ["a", "b"]


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    out = stats.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_wilcoxon_exact_p_by_hand_and_direction():
    # five positive differences: exact two-sided p = 2 / 2**5
    per = long_table({"a": np.array([2.0, 3, 4, 5, 6]), "b": np.array([1.0, 1, 1, 1, 1])})
    t = stats.paired_tests(per, "score", higher_is_better=True)
    assert t.loc[0, "p_value"] == pytest.approx(2 / 32)
    assert t.loc[0, "p_holm"] == pytest.approx(2 / 32)
    assert not t.loc[0, "significant"] and t.loc[0, "better"] == ""
    t = stats.paired_tests(per, "score", higher_is_better=True, alpha=0.1)
    assert t.loc[0, "better"] == "a"
    t = stats.paired_tests(per, "score", higher_is_better=False, alpha=0.1)
    assert t.loc[0, "better"] == "b"


def test_paired_tests_match_scipy_and_holm_on_random_data():
    rng = np.random.default_rng(4)
    base = rng.normal(size=60)
    scores = {
        "good": base + 0.8 + 0.3 * rng.normal(size=60),
        "mid": base + 0.1 * rng.normal(size=60),
        "bad": base - 0.5,
    }
    per = long_table(scores)
    t = stats.paired_tests(per, "score", higher_is_better=True)
    expected = [
        sps.wilcoxon(scores[a], scores[b]).pvalue for a, b in [("good", "mid"), ("good", "bad"), ("mid", "bad")]
    ]
    np.testing.assert_allclose(t["p_value"], expected, rtol=1e-12)
    np.testing.assert_allclose(t["p_holm"], stats.holm(expected), rtol=1e-12)
    assert list(t["better"]) == ["good", "good", "mid"]
    m = stats.significance_matrix(t)
    assert m.loc["good", "bad"] == ">" and m.loc["bad", "good"] == "<" and m.loc["mid", "bad"] == ">"
    lines = stats.statements(t, "score")
    assert lines[0].startswith("good is significantly better than mid on score (Holm p = ")


def test_identical_scores_are_not_significant():
    per = long_table({"a": np.ones(10), "b": np.ones(10)})
    t = stats.paired_tests(per, "score", True)
    assert t.loc[0, "p_value"] == 1.0 and not t.loc[0, "significant"]
    assert stats.significance_matrix(t).loc["a", "b"] == "="


def test_rank_intervals_equal_a_plain_loop():
    rng = np.random.default_rng(7)
    scores = {"x": rng.normal(1.0, 1, 30), "y": rng.normal(0.0, 1, 30), "z": rng.normal(0.05, 1, 30)}
    per = long_table(scores)
    t = stats.rank_intervals(per, "score", higher_is_better=True, n_boot=300, seed=2)
    values = np.column_stack(list(scores.values()))
    idx = np.random.default_rng(2).integers(0, 30, size=(300, 30))
    ranks = []
    for row in idx:
        means = [float(np.mean(values[row, j])) for j in range(3)]
        order = sorted(range(3), key=lambda j: -means[j])  # no ties in continuous data
        r = [0] * 3
        for pos, j in enumerate(order):
            r[j] = pos + 1
        ranks.append(r)
    ranks = np.array(ranks, dtype=float)
    np.testing.assert_allclose(t["rank_low"], np.percentile(ranks, 2.5, axis=0))
    np.testing.assert_allclose(t["rank_high"], np.percentile(ranks, 97.5, axis=0))
    assert t.loc["x", "rank"] == 1.0 and t.loc["x", "rank_high"] == 1.0
    assert t.loc["y", "rank_low"] >= 2.0
    lower = stats.rank_intervals(per, "score", higher_is_better=False, n_boot=300, seed=2)
    assert lower.loc["x", "rank"] == 3.0

"""Statistics that say which differences between attribution methods are real.

Input is a long table of per-image scores (one row per method and image, the shape of
:attr:`xwp.Evaluation.per_image`); every function takes the metric's direction
(``higher_is_better``) explicitly, so it works with any metric registry.

- :func:`summarize`: mean, median and a percentile-bootstrap 95 % interval of the mean per
  method (Efron & Tibshirani 1993, ch. 13), from a seeded generator;
- :func:`paired_tests`: Wilcoxon signed-rank test (Wilcoxon 1945; ``scipy.stats.wilcoxon``,
  two-sided) for every pair of methods on the images both scored, p-values corrected for
  the number of pairs with Holm's step-down method (Holm 1979);
- :func:`rank_intervals`: resample images with replacement, rank the methods' means in each
  resample (1 = best, ties share the average rank), report the 2.5 / 97.5 percentiles of
  each method's rank;
- :func:`significance_matrix` and :func:`statements`: the tests as a method x method table
  (``">"``: the row method is significantly better than the column method) or as sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

N_BOOT = 2000
LEVEL = 0.95
ALPHA = 0.05
#: bound on the bootstrap work array (elements): replicates are processed in chunks
CHUNK_ELEMENTS = 1 << 22


def _resample_chunks(n: int, n_boot: int, width: int, rng: np.random.Generator):
    """Yield index arrays ``(b, n)`` of bootstrap resamples, ``b * n * width`` bounded."""
    per = max(1, CHUNK_ELEMENTS // max(1, n * width))
    for start in range(0, n_boot, per):
        yield rng.integers(0, n, size=(min(per, n_boot - start), n))


def bootstrap_ci(
    values: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` (default the mean) of 1-D ``values`` (NaNs dropped).

    ``statistic`` receives a ``(b, n)`` array of resamples and returns ``(b,)``.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    stat = statistic or (lambda a: a.mean(axis=1))
    rng = np.random.default_rng(seed)
    reps = np.concatenate([stat(v[idx]) for idx in _resample_chunks(v.size, n_boot, 1, rng)])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def summarize(
    per_image: pd.DataFrame,
    metrics: Sequence[str],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    by: str | Sequence[str] = "method",
) -> pd.DataFrame:
    """Per group (default per method): ``<metric>_mean``, ``_median``, ``_ci_low``, ``_ci_high``, and ``n``.

    The interval is the percentile bootstrap of the mean over images (NaN scores dropped),
    seeded so the same table comes out every time.
    """
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, group in per_image.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for m in metrics:
            v = group[m].to_numpy(dtype=np.float64)
            ok = v[~np.isnan(v)]
            row[f"{m}_mean"] = float(ok.mean()) if ok.size else float("nan")
            row[f"{m}_median"] = float(np.median(ok)) if ok.size else float("nan")
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = bootstrap_ci(ok, n_boot, seed, level)
        row["n"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows).set_index(keys)


def wide(per_image: pd.DataFrame, metric: str, image: str = "image", method: str = "method") -> pd.DataFrame:
    """Scores as an image x method table (methods in first-seen order)."""
    order = list(dict.fromkeys(per_image[method]))
    return per_image.pivot(index=image, columns=method, values=metric)[order]


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): ``max_{j<=i} min(1, (m - j + 1) p_(j))``; NaNs stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def signed_rank_direction(diff: np.ndarray) -> float:
    """``W+ - W-``: the sum of signed ranks of the non-zero differences (> 0: the first method scores higher)."""
    d = diff[diff != 0]
    if d.size == 0:
        return 0.0
    r = sps.rankdata(np.abs(d))
    return float(r[d > 0].sum() - r[d < 0].sum())


def paired_tests(
    per_image: pd.DataFrame,
    metric: str,
    higher_is_better: bool,
    alpha: float = ALPHA,
    image: str = "image",
    method: str = "method",
) -> pd.DataFrame:
    """Wilcoxon signed-rank test for every pair of methods, Holm-corrected over the pairs.

    One row per unordered pair ``(a, b)``: ``n`` images scored by both, ``median_diff``
    (median of a - b), ``statistic`` and ``p_value`` from ``scipy.stats.wilcoxon`` (two-sided,
    zero differences dropped), ``p_holm``, ``significant`` (``p_holm < alpha``) and ``better``:
    the method whose scores are better in the metric's direction (by the signed-rank sum),
    or ``""`` when the difference is not significant. Identical scores give ``p_value = 1``.
    """
    table = wide(per_image, metric, image, method)
    names = list(table.columns)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair = table[[a, b]].dropna().to_numpy(dtype=np.float64)
            diff = pair[:, 0] - pair[:, 1]
            if np.count_nonzero(diff) == 0:
                stat, p = float("nan"), 1.0 if diff.size else float("nan")
            else:
                res = sps.wilcoxon(pair[:, 0], pair[:, 1], alternative="two-sided")
                stat, p = float(res.statistic), float(res.pvalue)
            direction = signed_rank_direction(diff)
            first_better = direction > 0 if higher_is_better else direction < 0
            rows.append(
                {
                    "method_a": a,
                    "method_b": b,
                    "n": diff.size,
                    "median_diff": float(np.median(diff)) if diff.size else float("nan"),
                    "statistic": stat,
                    "p_value": p,
                    "_better": a if first_better else b,
                    "_tie": direction == 0,
                }
            )
    out = pd.DataFrame(
        rows, columns=["method_a", "method_b", "n", "median_diff", "statistic", "p_value", "_better", "_tie"]
    )
    out["p_holm"] = holm(out["p_value"].to_numpy()) if len(out) else []
    out["significant"] = (out["p_holm"] < alpha) & ~out["_tie"]
    out["better"] = np.where(out["significant"], out["_better"], "")
    return out.drop(columns=["_better", "_tie"])


def rank_intervals(
    per_image: pd.DataFrame,
    metric: str,
    higher_is_better: bool,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    image: str = "image",
    method: str = "method",
) -> pd.DataFrame:
    """Bootstrap rank intervals: per method ``rank`` (on all images), ``rank_low``, ``rank_high``, ``rank_mean``.

    Images scored by every method are resampled with replacement ``n_boot`` times; in
    each resample the methods are ranked by their mean (1 = best in the metric's
    direction, ties share the average rank).
    """
    table = wide(per_image, metric, image, method).dropna()
    values = table.to_numpy(dtype=np.float64)  # (n, M)
    sign = -1.0 if higher_is_better else 1.0
    rng = np.random.default_rng(seed)
    ranks = [
        sps.rankdata(sign * values[idx].mean(axis=1), axis=1)
        for idx in _resample_chunks(values.shape[0], n_boot, values.shape[1], rng)
    ]
    r = np.concatenate(ranks)  # (n_boot, M)
    tail = 100 * (1 - level) / 2
    return pd.DataFrame(
        {
            "rank": sps.rankdata(sign * values.mean(axis=0)),
            "rank_low": np.percentile(r, tail, axis=0),
            "rank_high": np.percentile(r, 100 - tail, axis=0),
            "rank_mean": r.mean(axis=0),
        },
        index=pd.Index(table.columns, name=method),
    )


def significance_matrix(tests: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Method x method table from :func:`paired_tests`: ``">"`` row better, ``"<"`` worse, ``"="`` not significant."""
    names = list(methods) if methods is not None else list(dict.fromkeys([*tests["method_a"], *tests["method_b"]]))
    out = pd.DataFrame("", index=pd.Index(names, name="method"), columns=names)
    for row in tests.itertuples(index=False):
        if row.method_a not in out.index or row.method_b not in out.index:
            continue
        if row.better == row.method_a:
            out.loc[row.method_a, row.method_b], out.loc[row.method_b, row.method_a] = ">", "<"
        elif row.better == row.method_b:
            out.loc[row.method_a, row.method_b], out.loc[row.method_b, row.method_a] = "<", ">"
        else:
            out.loc[row.method_a, row.method_b] = out.loc[row.method_b, row.method_a] = "="
    return out


def statements(tests: pd.DataFrame, metric: str = "", labels: Mapping[str, str] | None = None) -> list[str]:
    """Sentences such as ``"xwp is significantly better than random on deletion_auc (Holm p = 1.2e-05, n = 200)"``."""
    names = labels or {}
    out = []
    for row in tests[tests["significant"]].itertuples(index=False):
        worse = row.method_b if row.better == row.method_a else row.method_a
        on = f" on {metric}" if metric else ""
        out.append(
            f"{names.get(row.better, row.better)} is significantly better than {names.get(worse, worse)}{on} "
            f"(Holm p = {row.p_holm:.2g}, n = {row.n})"
        )
    return out

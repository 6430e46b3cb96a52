"""The faithfulness study (xwp/study.py): a tiny run end to end, the seed summary, the Markdown, the rank check."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from xwp.metrics import METRICS
from xwp.study import PAPER_TABLE1, rank_check, run_study, study_markdown, summarize_seeds


def per_seed_frame(values: dict[str, list[float]]) -> pd.DataFrame:
    """A per-seed table for dataset 'typeface': ``values[method]`` = that method's metric means, one per seed."""
    rows = []
    for method, seeds in values.items():
        for seed, v in enumerate(seeds):
            row = {"dataset": "typeface", "seed": seed, "method": method, "seconds_per_image": 0.001 * (seed + 1)}
            for k, m in enumerate(METRICS):
                row[f"{m}_mean"] = v + k
                row[f"{m}_correct_only"] = v + k + 0.5
            row["test_accuracy"] = 0.9 + 0.01 * seed
            rows.append(row)
    return pd.DataFrame(rows)


def test_summarize_seeds_is_mean_and_population_std():
    s = summarize_seeds(per_seed_frame({"xwp": [0.1, 0.3], "random": [0.2, 0.2]}))
    row = s[s.method == "xwp"].iloc[0]
    assert row.average_drop == pytest.approx(0.2) and row.average_drop_std == pytest.approx(0.1)
    assert row.deletion_auc == pytest.approx(1.2) and row.insertion_auc == pytest.approx(2.2)
    assert row.average_drop_correct_only == pytest.approx(0.7)
    assert row.seconds_per_image == pytest.approx(0.0015) and row.seeds == 2
    assert row.test_accuracy == pytest.approx(0.905)
    assert s[s.method == "random"].iloc[0].average_drop_std == 0


def summary_of(rows: dict[str, tuple[float, float]], dataset: str = "typeface") -> pd.DataFrame:
    """A summary with the given (average drop, deletion AUC) per method."""
    out = []
    for method, (ad, del_auc) in rows.items():
        out.append({"dataset": dataset, "method": method, "average_drop": ad, "deletion_auc": del_auc})
    return pd.DataFrame(out)


def test_rank_check_reads_each_metrics_direction():
    summary = summary_of({"xwp": (0.4, 0.1), "ig": (0.4, 0.3), "lrp": (0.1, 0.1), "random": (0.2, 0.2)})
    problems = rank_check(summary)
    assert len(problems) == 2
    assert problems[0].startswith("typeface: ig does not beat random order")  # deletion AUC higher than random
    assert problems[1].startswith("typeface: lrp does not beat random order")  # average drop lower than random
    assert "AD 0.400 vs 0.200" in problems[0] and "Del. AUC 0.300 vs 0.200" in problems[0]
    assert rank_check(summary_of({"xwp": (0.4, 0.1)})) == []  # nothing to compare with


def test_study_markdown_has_every_metric_and_the_paper_row():
    s = summarize_seeds(per_seed_frame({"xwp": [0.1, 0.3], "random": [0.2, 0.2]}))
    timings = pd.DataFrame(
        [{"dataset": "typeface", "seed": k, "train_s": 1.0, "evaluate_s": 2.0, "test_accuracy": 0.9} for k in (0, 1)]
    )
    info = {"n": 5, "seeds": [0, 1], "device": "cpu", "total_seconds": 90, "cpu_threads": 1}
    md = study_markdown(s, timings, info)
    header = next(line for line in md.splitlines() if line.startswith("| method |"))
    for m in METRICS.values():
        assert f"{m.label} {m.arrow}" in header
    assert "| XWP | 0.200 ± 0.100 | 1.200 ± 0.100 | 2.200 ± 0.100 | 0.700 | 1.700 | 1.50 |" in md
    ad, del_auc = PAPER_TABLE1["tmnist"]["xwp"]
    assert f"| typeface / tmnist | XWP | 0.200 | {ad:.3f} | 1.200 | {del_auc:.3f} |" in md
    assert "Random" not in md.split("## Beside the paper's Table 1")[1]  # the paper has no random row
    assert md.endswith("Total: 1.5 min on cpu (1 threads).\n")


def test_tiny_study_end_to_end(tmp_path):
    """Two seeds, one epoch, 6 images, three methods: files are written and the summary is their mean."""
    logged = []
    result = run_study(
        datasets=("typeface",),
        seeds=(0, 1),
        n=6,
        methods=("xwp", "xwpc", "random"),
        out_dir=tmp_path,
        epochs=1,
        log=logged.append,
    )
    names = {p.name for p in result.files}
    assert {"per_seed.csv", "study.csv", "timings.csv", "study.json", "study.md"} <= names
    assert {"deletion_typeface.png", "heatmaps_typeface.png"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in result.files)
    per_seed = pd.read_csv(tmp_path / "per_seed.csv")
    assert list(per_seed.method) == ["xwp", "xwpc", "random"] * 2 and list(per_seed.seed) == [0, 0, 0, 1, 1, 1]
    # the summary is the plain mean over seeds of the per-seed means (reference: pandas by hand)
    for m in METRICS:
        expected = result.per_seed.groupby("method", sort=False)[f"{m}_mean"].mean()
        got = result.summary.set_index("method")[m]
        pd.testing.assert_series_equal(got.loc[expected.index], expected, check_names=False)
    assert (result.summary.seeds == 2).all()
    info = json.loads((tmp_path / "study.json").read_text())
    assert info["epochs"] == 1 and info["methods"] == ["xwp", "xwpc", "random"]
    assert "# Faithfulness study (6 test images" in (tmp_path / "study.md").read_text()
    assert len(logged) == 3  # one line per seed, one at the end

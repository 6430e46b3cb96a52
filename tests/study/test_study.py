"""The faithfulness study (xwp/study/run.py): a tiny run end to end, the seed summary, the Markdown, the rank check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xwp.evaluation.metrics import METRICS
from xwp.study.run import PAPER_TABLE1, rank_check, run_study, study_markdown, summarize_seeds

ROOT = Path(__file__).resolve().parents[2]


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
    # METRICS order: deletion_auc (k=0), insertion_auc (1), srg (2), average_drop (3)
    assert row.deletion_auc == pytest.approx(0.2) and row.deletion_auc_std == pytest.approx(0.1)
    assert row.insertion_auc == pytest.approx(1.2) and row.average_drop == pytest.approx(3.2)
    assert row.deletion_auc_correct_only == pytest.approx(0.7)
    assert row.seconds_per_image == pytest.approx(0.0015) and row.seeds == 2
    assert row.test_accuracy == pytest.approx(0.905)
    assert s[s.method == "random"].iloc[0].average_drop_std == 0
    assert "output" not in s  # an old per-seed table without output spaces still summarises


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
        if m.name in ("sparseness", "complexity"):
            continue
        assert f"{m.label} {m.arrow}" in header
    # deletion_auc k=0, insertion k=1, srg k=2, average_drop k=3: mean 0.2 + k, std 0.1
    assert "| XWP | 0.200 ± 0.100 | 1.200 ± 0.100 | 2.200 ± 0.100 | 3.200 ± 0.100 |" in md
    ad, del_auc = PAPER_TABLE1["tmnist"]["xwp"]
    assert f"| typeface / tmnist | XWP | 3.200 | {ad:.3f} | 0.200 | {del_auc:.3f} |" in md  # AD first, as the paper
    assert "Random" not in md.split("## Beside the paper's Table 1")[1]  # the paper has no random row
    assert md.endswith("Total: 1.5 min on cpu (1 threads).\n")


TINY = dict(datasets=("typeface",), seeds=(0, 1), n=6, methods=("xwp", "occlusion", "random"), epochs=1)


def test_tiny_study_end_to_end(tmp_path):
    """Two seeds, one epoch, 6 images, three methods, two output spaces: files, summary, significance."""
    logged = []
    result = run_study(**TINY, out_dir=tmp_path, log=logged.append)
    names = {p.name for p in result.files}
    assert {"per_seed.csv", "study.csv", "timings.csv", "study.json", "study.md", "significance.csv"} <= names
    assert {"deletion_typeface.png", "heatmaps_typeface.png"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in result.files)
    per_seed = pd.read_csv(tmp_path / "per_seed.csv")
    assert list(per_seed.method) == [m for m in TINY["methods"] for _ in (0, 1)] * 2
    assert list(per_seed.output[:2]) == ["softmax", "logits"] and list(per_seed.seed) == [0] * 6 + [1] * 6
    # the summary is the plain mean over seeds of the per-seed means (reference: pandas by hand)
    keys = ["method", "output", "removal"]
    for m in ("deletion_auc", "srg", "average_drop"):
        expected = result.per_seed.groupby(keys, sort=False)[f"{m}_mean"].mean()
        got = result.summary.set_index(keys)[m]
        pd.testing.assert_series_equal(got.loc[expected.index], expected, check_names=False)
    assert (result.summary.seeds == 2).all()
    tests = pd.read_csv(tmp_path / "significance.csv")
    assert set(tests.output) == {"softmax", "logits"} and (tests.n == 12).all()  # 6 images x 2 seeds, paired
    info = json.loads((tmp_path / "study.json").read_text())
    assert info["epochs"] == 1 and info["methods"] == list(TINY["methods"]) and info["executor"] == "serial"
    md = (tmp_path / "study.md").read_text()
    assert "# Faithfulness study (6 test images" in md and "## Significant differences" in md
    assert "### typeface, MLP, logits, zero removal" in md and "pairs significant)" in md
    assert "## typeface, MLP 784-400-100-10 (test accuracy" in md
    assert set(per_seed.arch) == {"mlp"} and set(tests.arch) == {"mlp"} and set(result.summary.arch) == {"mlp"}
    assert len(logged) == 3  # one line per seed, one at the end


def test_ranking_agreement_across_removals(tmp_path):
    """Deactivation equals zero removal for an MLP, so the methods' ranking agrees perfectly between them."""
    result = run_study(
        **dict(TINY, seeds=(0,)), removals=("zero", "deactivation"), out_dir=tmp_path, log=lambda _: None
    )
    agree = result.agreement
    assert set(agree.removal_a + "/" + agree.removal_b) == {"zero/deactivation"}
    assert (agree.methods == 2).all()  # random order is left out
    assert agree.spearman.to_numpy() == pytest.approx(1.0, abs=1e-12)
    assert "## Does the ranking survive a change of removal?" in (tmp_path / "study.md").read_text()
    assert (tmp_path / "removal_agreement.csv").exists()


def test_importing_the_study_does_not_import_ray():
    code = "import sys, xwp.study, xwp.cli; assert 'ray' not in sys.modules, 'ray imported'"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1000:]


def test_serial_run_needs_no_address(tmp_path):
    from xwp.errors import XWPError

    with pytest.raises(XWPError, match="unknown executor"):
        run_study(**TINY, out_dir=tmp_path, executor="spark")
    with pytest.raises(XWPError, match="--address needs --executor ray"):
        run_study(**TINY, out_dir=tmp_path, address="auto")


def test_ray_study_equals_the_serial_one(tmp_path):
    """Each (dataset, seed, method) as a Ray task on a local Ray: the same per-seed numbers as the serial run."""
    pytest.importorskip("ray")
    import ray

    kw = dict(TINY, seeds=(0,), archs=("mlp", "cnn"), channels=(4, 8))
    # a Ray task with num_cpus=1 runs torch on one thread; the CNN's convolutions round differently
    # on one thread than on two (seen here: deletion AUCs 2e-5 apart), so the serial run uses one too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_study(**kw, out_dir=tmp_path / "serial", log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    try:
        distributed = run_study(
            **kw, out_dir=tmp_path / "ray", log=lambda _: None, executor="ray", ray_options={"num_cpus": 1}
        )
    finally:
        ray.shutdown()
    cols = [c for c in serial.per_seed.columns if c != "seconds_per_image"]
    a, b = serial.per_seed[cols], distributed.per_seed[cols]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.isfinite(a["deletion_auc_mean"]).all()
    pd.testing.assert_frame_equal(serial.tests, distributed.tests, check_exact=True)
    assert list(dict.fromkeys(a.arch)) == ["mlp", "cnn"]
    # each (dataset, arch, seed)'s evaluate time is its tasks' own time, not the driver's wait (once 0 s)
    times = pd.read_csv(tmp_path / "ray" / "timings.csv")
    assert (times["evaluate_s"] > 0).all()


@pytest.mark.slow  # trains two networks: ~8 s
def test_tiny_study_of_an_mlp_and_a_cnn(tmp_path):
    """``archs=("mlp", "cnn")``: both networks per seed, an arch column everywhere, one section and figure each."""
    result = run_study(
        **dict(TINY, methods=("xwp", "random")),
        archs=("mlp", "cnn"),
        channels=(4, 8),
        outputs=("softmax",),
        out_dir=tmp_path,
        log=lambda _: None,
    )
    per_seed = pd.read_csv(tmp_path / "per_seed.csv")
    assert list(per_seed.columns[:4]) == ["dataset", "arch", "seed", "method"]
    assert list(zip(per_seed.arch, per_seed.seed, strict=True)) == [
        (a, s) for a in ("mlp", "cnn") for s in (0, 0, 1, 1)
    ]
    # each network's seeds are summarised apart: the CNN's rows are not averaged into the MLP's
    summary = pd.read_csv(tmp_path / "study.csv")
    assert len(summary) == 4 and (summary.seeds == 2).all()
    for arch in ("mlp", "cnn"):
        mine = per_seed[(per_seed.arch == arch) & (per_seed.method == "xwp")]
        got = summary[(summary.arch == arch) & (summary.method == "xwp")].deletion_auc.item()
        assert got == pytest.approx(mine.deletion_auc_mean.mean(), abs=1e-5)
    timings = pd.read_csv(tmp_path / "timings.csv")
    assert list(timings.arch) == ["mlp", "mlp", "cnn", "cnn"]
    tests = pd.read_csv(tmp_path / "significance.csv")
    assert list(tests.arch) == ["mlp"] * (len(tests) // 2) + ["cnn"] * (len(tests) // 2) and (tests.n == 12).all()
    names = {p.name for p in result.files}
    assert {f"{k}_typeface_{a}.png" for k in ("deletion", "heatmaps") for a in ("mlp", "cnn")} <= names
    assert "deletion_typeface.png" not in names
    md = (tmp_path / "study.md").read_text()
    assert "## typeface, MLP 784-400-100-10 (test accuracy" in md
    assert "## typeface, CNN 1x28x28 c4-c8 k3 p1 | 128-10 (test accuracy" in md
    assert "### typeface, CNN, softmax, zero removal" in md and "| typeface (CNN) / tmnist | XWP |" in md
    info = json.loads((tmp_path / "study.json").read_text())
    assert info["archs"] == ["mlp", "cnn"] and info["methods_per_arch"]["cnn"] == ["xwp", "random"]


def test_default_methods_add_ad_occlusion_for_the_cnn_only(tmp_path, monkeypatch):
    """AD occlusion equals occlusion on an MLP: by default the study runs it on CNNs only."""
    import xwp.study.run
    from xwp.attribution import METHODS

    seen = []

    def stop(plan, *args):
        seen.append(plan)
        raise RuntimeError("planned")

    monkeypatch.setattr(xwp.study.run, "run_cells", stop)
    with pytest.raises(RuntimeError, match="planned"):
        run_study(("typeface",), (0,), n=4, epochs=1, archs=("mlp", "cnn"), out_dir=tmp_path, log=lambda _: None)
    plan = seen[0]
    assert plan.methods_for("mlp") == tuple(m for m in METHODS if m != "ad-occlusion")
    assert plan.methods_for("cnn") == (*plan.methods_for("mlp"), "ad-occlusion")
    assert plan.config("typeface", "cnn", 0).arch == "cnn" and plan.config("typeface", "mlp", 0).hidden == (400, 100)
    with pytest.raises(RuntimeError, match="planned"):  # methods given: exactly those, on every network
        run_study(("typeface",), (0,), n=4, epochs=1, methods=("ad-occlusion",), archs=("mlp",), out_dir=tmp_path)
    assert seen[1].methods_for("mlp") == seen[1].methods_for("cnn") == ("ad-occlusion",)


def test_unknown_arch_and_bad_cnn_sizes_stop_before_training(tmp_path):
    from xwp.errors import XWPError

    with pytest.raises(XWPError, match="unknown architecture"):
        run_study(**TINY, archs=("vit",), out_dir=tmp_path)
    with pytest.raises(XWPError):
        run_study(**TINY, archs=("cnn",), kernel=40, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())

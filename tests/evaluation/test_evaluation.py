"""evaluate(): the table's shape, its rows, and that real methods beat random order."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

import xwp
from xwp.evaluation import metrics
from xwp.evaluation import protocol as evaluation
from xwp.evaluation.protocol import evaluate


def test_table_shape_and_curves(trained, typeface):
    ev = evaluate(trained, typeface[1], ["xwp", "xwpc", "ig", "random"], n=24, seed=0, batch_size=10)
    t = ev.table
    assert list(t.columns[:4]) == ["method", "output", "removal", "label"]
    assert list(zip(t.method, t.output, strict=True))[:3] == [
        ("xwp", "softmax"),
        ("xwp", "logits"),
        ("xwpc", "softmax"),
    ]
    for m in metrics.PINNED:
        for suffix in ("_mean", "_median", "_ci_low", "_ci_high"):
            assert f"{m}{suffix}" in t.columns
    assert (t["n"] == 24).all() and len(t) == 4 * 2
    assert (t["deletion_auc_ci_low"] <= t["deletion_auc_mean"]).all()
    assert (t["deletion_auc_mean"] <= t["deletion_auc_ci_high"]).all()
    assert ev.deletion["xwp"].shape == (24, 201) and ev.insertion["ig"].shape == (24, 201)
    assert ev.curves[("xwp", "logits", "zero")]["deletion"].shape == (24, 201)
    # raw probabilities: the intact image's score is p_target, not 1
    p = ev.per_image.drop_duplicates("image")["p_target"].to_numpy()
    np.testing.assert_allclose(ev.deletion["xwp"][:, 0], p, rtol=1e-5)
    np.testing.assert_allclose(ev.insertion["xwp"][:, -1], p, rtol=1e-5)
    assert len(ev.per_image) == 4 * 2 * 24
    assert ev.examples["attributions"]["xwp"].shape[1:] == (1, 28, 28)
    md = ev.markdown()
    assert "Deletion AUC ↓" in md and "Average Drop @20% ↑" in md and "XWP" in md
    soft = t[t.output == "softmax"].set_index("method")
    for name in ("xwp", "xwpc", "ig"):
        row, rnd = soft.loc[name], soft.loc["random"]
        assert row["deletion_auc_mean"] < rnd["deletion_auc_mean"]
        assert row["average_drop_mean"] > rnd["average_drop_mean"]
        assert row["srg_mean"] > rnd["srg_mean"]
    assert len(ev.table_correct()) == len(t)
    lines = ev.statements()
    assert any("significantly better than Random" in s and "(softmax, zero removal; Holm p" in s for s in lines)


def test_correct_only_filters_tables_curves_and_tests(trained, typeface):
    import dataclasses

    # every 4th label moved by one: misclassified images on any machine (the typeface digits come
    # from the installed fonts, and on some machines the 3-epoch model got all 40 sampled right)
    labels = typeface[1].labels.clone()
    labels[::4] = (labels[::4] + 1) % 10
    test = dataclasses.replace(typeface[1], labels=labels)
    ev = evaluate(trained, test, ["xwp", "random"], n=40, seed=3, outputs=("softmax",), sensitivity_samples=0)
    correct = ev.per_image.drop_duplicates("image")["correct"].to_numpy()
    assert 0 < correct.sum() < 40, "the test needs some misclassified images"
    only = ev.curve_set("deletion", "softmax", "zero", correct_only=True)
    assert only["xwp"].shape == (correct.sum(), 201)
    np.testing.assert_array_equal(only["xwp"], ev.deletion["xwp"][correct])
    assert (ev.table_correct()["n"] == correct.sum()).all()
    mean = ev.per_image[(ev.per_image.method == "xwp") & ev.per_image.correct]["deletion_auc"].mean()
    assert ev.table_correct().set_index("method").loc["xwp", "deletion_auc_mean"] == pytest.approx(mean)
    assert ev.significance("deletion_auc", "softmax", "zero", correct_only=True)["n"].iloc[0] == correct.sum()
    assert ev.table["max_sensitivity_mean"].isna().all()


def test_scores_do_not_depend_on_the_batch_size(trained, typeface):
    kw = dict(n=12, seed=1, outputs=("softmax",), sensitivity_samples=0)
    # in float64: float32 GEMMs round differently per batch shape (average drop moved by 1.2e-6
    # relative on one CPU), which would hide nothing a batch-size bug would show
    model = copy.deepcopy(trained).double()
    # occlusion's maps are 0 on the black background: many ties, broken per (seed, image index);
    # random's maps are drawn per image from (seed, the image's values), so it joins in
    a = evaluate(model, typeface[1], ["occlusion", "random"], batch_size=12, **kw)
    b = evaluate(model, typeface[1], ["occlusion", "random"], batch_size=5, **kw)
    for m in ("deletion_auc", "insertion_auc", "srg", "average_drop"):
        np.testing.assert_allclose(a.per_image[m], b.per_image[m], rtol=1e-9, atol=1e-12, err_msg=m)


def test_progress_names_the_running_method_and_stop_keeps_finished_work(trained, typeface):
    seen = []
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # after xwp (2 outputs x 1 batch) and one batch of random's softmax

    ev = evaluate(
        trained,
        typeface[1],
        ["xwp", "random"],
        n=4,
        sensitivity_samples=0,
        progress=lambda f, m: seen.append(m),
        stop=stop,
    )
    assert seen[0].startswith("XWP (softmax): images 1-4 of 4") and seen[1].startswith("XWP (logits)")
    assert seen[2].startswith("Random (softmax)")
    assert ev.settings["stopped"] and ev.methods == ["xwp", "random"]
    assert set(ev.table.loc[ev.table.method == "random", "output"]) == {"softmax"}  # only finished pairs are kept
    with pytest.raises(xwp.XWPError, match="stopped before any method finished"):
        evaluate(trained, typeface[1], ["xwp"], n=4, stop=lambda: True)


def test_removals_and_combine(trained, typeface):
    kw = dict(n=6, seed=0, sensitivity_samples=0, outputs=("logits",))
    ev = evaluate(trained, typeface[1], ["xwp", "occlusion"], removals=("zero", "deactivation", "revert"), **kw)
    assert ev.removals == ["zero", "deactivation", "revert"]
    per = ev.per_image.set_index(["method", "removal", "image"])
    # deactivation is zero removal for an MLP
    np.testing.assert_allclose(per.loc[("xwp", "deactivation")]["srg"], per.loc[("xwp", "zero")]["srg"], rtol=1e-6)
    a = evaluate(trained, typeface[1], ["xwp"], **kw)
    b = evaluate(trained, typeface[1], ["occlusion"], **kw)
    both = evaluation.combine([a, b])
    whole = evaluate(trained, typeface[1], ["xwp", "occlusion"], **kw)
    cols = [c for c in whole.table.columns if c != "seconds_per_image"]
    pd.testing.assert_frame_equal(both.table[cols], whole.table[cols])
    with pytest.raises(xwp.XWPError, match="unknown removal"):
        evaluate(trained, typeface[1], ["xwp"], removals=("fog",), **kw)
    with pytest.raises(xwp.XWPError, match="train_mean"):
        evaluate(trained, typeface[1], ["xwp"], removals=("mean",), **kw)


def test_same_seed_same_table(trained, typeface):
    a = evaluate(trained, typeface[1], ["xwp", "random"], n=8, seed=4)
    b = evaluate(trained, typeface[1], ["xwp", "random"], n=8, seed=4)
    cols = [c for c in a.table.columns if c != "seconds_per_image"]
    assert a.table[cols].equals(b.table[cols])


def test_bad_requests(trained, typeface):
    with pytest.raises(xwp.XWPError, match="unknown method"):
        evaluate(trained, typeface[1], ["xwp", "magic"], n=4)
    with pytest.raises(xwp.XWPError, match="n must be between 1 and"):
        evaluate(trained, typeface[1], ["xwp"], n=len(typeface[1]) + 1)
    with pytest.raises(xwp.XWPError):
        evaluate(trained, typeface[1], [], n=4)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_evaluate_on_cuda_matches_cpu(trained, typeface):
    import copy

    cpu = evaluate(trained, typeface[1], ["xwp", "xwpc", "random"], n=16, seed=0)
    gpu = evaluate(copy.deepcopy(trained).cuda(), typeface[1], ["xwp", "xwpc", "random"], n=16, seed=0)
    for col in ("average_drop_mean", "deletion_auc_mean", "insertion_auc_mean", "srg_mean"):
        assert np.allclose(cpu.table[col], gpu.table[col], rtol=1e-3, atol=1e-4), col


def test_float64_model(trained, typeface):
    """A float64 model's table equals the metrics computed directly, and agrees with float32."""
    import copy

    import torch

    from xwp.attribution import make_method
    from xwp.evaluation import metrics

    model64 = copy.deepcopy(trained).double()
    kw = dict(n=6, seed=0, outputs=("softmax",), sensitivity_samples=0)
    ev = evaluate(model64, typeface[1], ["xwp", "occlusion"], **kw)
    ev32 = evaluate(trained, typeface[1], ["xwp", "occlusion"], **kw)
    sample = typeface[1].sample(6, 0)
    x, y = sample.images.double(), sample.labels
    for name in ("xwp", "occlusion"):
        per = ev.per_image[ev.per_image["method"] == name]
        attr = make_method(name, model64).attribute(x, target=y)
        assert attr.dtype == torch.float64
        expected = {
            "average_drop": metrics.average_drop(model64, x, y, attr, seed=0),
            "deletion_auc": metrics.deletion_auc(model64, x, y, attr, seed=0),
            "insertion_auc": metrics.insertion_auc(model64, x, y, attr, seed=0),
        }
        for m, values in expected.items():
            np.testing.assert_allclose(per[m].to_numpy(), values.numpy(), rtol=1e-12, atol=1e-15, err_msg=f"{name} {m}")
        # float32 and float64 maps differ by rounding only (~1e-7 seen), but neighbouring XWP scores can be
        # closer than that (gaps of 1e-8 seen), so the two precisions may delete near-ties in another order
        # (deletion AUC of one image moved by 2e-4 on an AMD EPYC), and a pixel that is exactly 0 in float32
        # but -3e-8 in float64 leaves the block of zero scores, whose seeded random tie order then reshuffles
        # (insertion AUC of that image moved by 0.03). Scored in float64 with the float32 map's order, the
        # float32 table comes back to rounding.
        attr32 = make_method(name, trained).attribute(x.float(), target=y)
        np.testing.assert_allclose(attr32.double().numpy(), attr.numpy(), rtol=0, atol=1e-5 * attr.abs().max().item())
        t32 = ev32.table.set_index("method")
        for m, fn in (
            ("average_drop", metrics.average_drop),
            ("deletion_auc", metrics.deletion_auc),
            ("insertion_auc", metrics.insertion_auc),
        ):
            same_order = fn(model64, x, y, attr32.double(), seed=0).mean().item()
            assert abs(same_order - t32.loc[name, f"{m}_mean"]) < 1e-5, (name, m)


def test_log_odds_output_space_against_direct_calls(trained, typeface):
    import torch

    from xwp.attribution import XWP, make_method
    from xwp.evaluation import faithfulness as F
    from xwp.evaluation.scales import log_odds, xwp_log_odds

    ev = evaluate(trained, typeface[1], ["xwp", "occlusion"], n=6, seed=2, outputs=("log-odds",), sensitivity_samples=0)
    assert set(ev.table["output"]) == {"log-odds"} and ev.outputs == ["log-odds"]
    sample = typeface[1].sample(6, 2)
    x, y = sample.images, sample.labels
    maps = {
        "xwp": XWP(trained, output=xwp_log_odds).attribute(x, target=y),  # indicator sum = the target's log-odds
        "occlusion": make_method("occlusion", trained, output=log_odds).attribute(x, target=y),
    }
    with torch.no_grad():
        p = torch.softmax(trained(x).double(), 1)
    want0 = torch.log(p.gather(1, y[:, None])[:, 0]) - torch.log1p(-p.gather(1, y[:, None])[:, 0])
    for name, attr in maps.items():
        # evaluate()'s own maps equal the direct calls to rounding; near-tied scores may then fall in another
        # order, so the curves are recomputed from evaluate()'s maps (what it scored), not from ours
        kept = torch.from_numpy(ev.examples["attributions"][name])
        np.testing.assert_allclose(kept.numpy(), attr.numpy(), rtol=0, atol=1e-5 * attr.abs().max().item())
        rows = ev.per_image[ev.per_image.method == name].sort_values("image")
        curves = F.curves(trained, x, y, kept, output="log-odds")
        np.testing.assert_allclose(rows["deletion_auc"], F.auc(curves).double().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            ev.curves[(name, "log-odds", "zero")]["deletion"], curves.numpy(), rtol=1e-4, atol=1e-4
        )  # float32 log-odds of batches of other sizes: 1.4e-5 relative seen on an AMD EPYC
        np.testing.assert_allclose(curves[:, 0].double().numpy(), want0.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(xwp.XWPError, match="log-odds"):
        evaluate(trained, typeface[1], ["xwp"], n=2, outputs=("odds",))

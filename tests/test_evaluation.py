"""evaluate(): the table's shape, its rows, and that real methods beat random order."""

from __future__ import annotations

import numpy as np
import pytest

import xwp
from xwp.evaluation import evaluate


def test_table_shape_and_curves(trained, typeface):
    ev = evaluate(trained, typeface[1], ["xwp", "xwpc", "ig", "random"], n=24, seed=0, batch_size=10)
    assert list(ev.table.index) == ["xwp", "xwpc", "ig", "random"]
    for col in [
        "average_drop_mean",
        "average_drop_std",
        "deletion_auc_mean",
        "deletion_auc_std",
        "insertion_auc_mean",
        "insertion_auc_std",
        "seconds_per_image",
        "label",
        "n",
    ]:
        assert col in ev.table.columns
    assert (ev.table["n"] == 24).all()
    assert ev.deletion["xwp"].shape == (24, 201) and ev.insertion["ig"].shape == (24, 201)
    assert np.allclose(ev.deletion["xwp"][:, 0], 1.0) and np.allclose(ev.insertion["xwp"][:, -1], 1.0)
    assert len(ev.per_image) == 4 * 24
    assert ev.examples["attributions"]["xwp"].shape[1:] == (1, 28, 28)
    md = ev.markdown()
    assert "Deletion AUC ↓" in md and "Average Drop @20% ↑" in md and "XWP" in md
    for name in ("xwp", "xwpc", "ig"):
        row, rnd = ev.table.loc[name], ev.table.loc["random"]
        assert row["deletion_auc_mean"] < rnd["deletion_auc_mean"]
        assert row["average_drop_mean"] > rnd["average_drop_mean"]
    assert set(ev.table_correct().index) == set(ev.table.index)


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
    for col in ("average_drop_mean", "deletion_auc_mean", "insertion_auc_mean"):
        assert np.allclose(cpu.table[col], gpu.table[col], rtol=1e-3, atol=1e-4), col


def test_float64_model(trained, typeface):
    """A float64 model's table equals the metrics computed directly, and agrees with float32."""
    import copy

    import torch

    from xwp import metrics
    from xwp.attribution import make_method

    model64 = copy.deepcopy(trained).double()
    ev = evaluate(model64, typeface[1], ["xwp", "occlusion"], n=6, seed=0)
    ev32 = evaluate(trained, typeface[1], ["xwp", "occlusion"], n=6, seed=0)
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
        for m in expected:  # float32 and float64 differ by rounding only (~1e-7 seen)
            assert abs(ev.table.loc[name, f"{m}_mean"] - ev32.table.loc[name, f"{m}_mean"]) < 1e-5, (name, m)

"""xwp.evaluation.faithfulness: every score against a slow, obviously correct per-image loop (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from tests.support import random_trained_mlp
from xwp.errors import XWPError
from xwp.evaluation import faithfulness as F
from xwp.evaluation import removal


@pytest.fixture(scope="module")
def setup():
    model = random_trained_mlp((16, 9, 6, 4), seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64)
    x[x < 0.3] = 0.0
    y = torch.tensor([0, 1, 2, 3, 1])
    attr = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    return model, x, y, attr


def of_logits(z, t, output):
    """The slow reference score of one logit vector: p_t, z_t or log p_t - log(sum of the other p)."""
    p = torch.softmax(z, 0)
    if output == "log-odds":
        return (torch.log(p[t]) - torch.log(p.sum() - p[t])).item()
    return (p[t] if output == "softmax" else z[t]).item()


def score(model, img, target, output):
    return of_logits(model(img[None])[0], target, output)


def slow_curve(model, x, t, attr, kind, order, op, output, steps):
    """One image, one step at a time, features sorted with Python's sort."""
    d = x.numel()
    a = attr.reshape(-1).tolist()
    idx = sorted(range(d), key=lambda i: -a[i])  # descending; random attributions have no ties
    if order == "lerf":
        idx = idx[::-1]
    out = []
    for k in range(steps + 1):
        taken = set(idx[: (d * k) // steps])
        keep = torch.tensor([[(i not in taken) if kind == "deletion" else (i in taken) for i in range(d)]])
        z = op.logits(model, x[None], keep)[0]
        out.append(of_logits(z, t, output))
    return out


@pytest.mark.parametrize("output", ["softmax", "logits", "log-odds"])
@pytest.mark.parametrize("kind,order", [("deletion", "morf"), ("deletion", "lerf"), ("insertion", "morf")])
@pytest.mark.parametrize("op_name", ["zero", "blur", "revert"])
def test_curves_equal_a_slow_loop(setup, output, kind, order, op_name):
    model, x, y, attr = setup
    op = removal.make_removal(op_name, model)
    fast = F.curves(model, x, y, attr, kind, order, op, output, steps=7, rows=9)  # odd chunking on purpose
    for b in range(5):
        slow = slow_curve(model, x[b], int(y[b]), attr[b], kind, order, op, output, 7)
        np.testing.assert_allclose(fast[b].numpy(), slow, rtol=1e-10, atol=1e-12)
    trap = sum((slow[k] + slow[k + 1]) / 2 / 7 for k in range(7))
    assert F.auc(fast)[-1].item() == pytest.approx(trap, rel=1e-10)


def test_curves_are_raw_by_default_and_relative_is_clipped(setup):
    model, x, y, attr = setup
    raw = F.curves(model, x, y, attr, steps=4)
    p0 = F.intact_score(model, x, y)
    torch.testing.assert_close(raw[:, 0], p0)
    rel = F.curves(model, x, y, attr, steps=4, relative=True)
    torch.testing.assert_close(rel, (raw / p0[:, None]).clamp(0, 1))
    assert rel.max() <= 1.0
    with pytest.raises(XWPError, match="softmax"):
        F.curves(model, x, y, attr, output="logits", relative=True)


def test_srg_is_lerf_minus_morf_and_road_runs(setup):
    model, x, y, attr = setup
    morf = F.curves(model, x, y, attr, "deletion", "morf", steps=5)
    lerf = F.curves(model, x, y, attr, "deletion", "lerf", steps=5)
    torch.testing.assert_close(F.srg(morf, lerf), F.auc(lerf) - F.auc(morf))
    road = removal.NoisyLinearImputation(noise=0.0)
    c = F.curves(model, x, y, attr, "deletion", "morf", road, steps=4)
    slow = slow_curve(model, x[2], int(y[2]), attr[2], "deletion", "morf", road, "softmax", 4)
    np.testing.assert_allclose(c[2].numpy(), slow, rtol=1e-7)


@pytest.mark.parametrize("output", ["softmax", "logits", "log-odds"])
def test_average_drop_by_loop(setup, output):
    model, x, y, attr = setup
    got = F.average_drop(model, x, y, attr, output=output, fraction=0.25)
    for b in range(5):
        top = np.argsort(-attr[b].reshape(-1).numpy())[:4]
        xr = x[b].clone().reshape(-1)
        xr[top] = 0
        s0, s1 = score(model, x[b], int(y[b]), output), score(model, xr.reshape(x[b].shape), int(y[b]), output)
        want = max(0.0, s0 - s1) / (s0 if output == "softmax" else 1.0)
        assert got[b].item() == pytest.approx(want, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("output", ["softmax", "logits", "log-odds"])
def test_faithfulness_correlation_by_loop(setup, output):
    model, x, y, attr = setup
    subsets = F.random_subsets(16, n_runs=12, subset_size=5, seed=4)[None].repeat(5, 1, 1)
    subsets[1] = F.random_subsets(16, n_runs=12, subset_size=5, seed=9)  # per-image subsets are accepted too
    got = F.faithfulness_correlation(model, x, y, attr, output=output, subsets=subsets, rows=7)
    seeded = F.faithfulness_correlation(model, x, y, attr, output=output, n_runs=12, subset_size=5, seed=4)
    torch.testing.assert_close(got[[0, 2, 3, 4]], seeded[[0, 2, 3, 4]])
    one = F.faithfulness_correlation(model, x[3:4], y[3:4], attr[3:4], output=output, n_runs=12, subset_size=5, seed=4)
    torch.testing.assert_close(one[0], seeded[3])  # independent of the batch
    for b in range(5):
        s0 = score(model, x[b], int(y[b]), output)
        sums, drops = [], []
        for r in range(12):
            idx = subsets[b, r].tolist()
            assert len(set(idx)) == 5
            xr = x[b].clone().reshape(-1)
            xr[idx] = 0
            drops.append(s0 - score(model, xr.reshape(x[b].shape), int(y[b]), output))
            sums.append(float(attr[b].reshape(-1)[idx].sum()))
        assert got[b].item() == pytest.approx(sps.pearsonr(sums, drops)[0], rel=1e-9)


def test_log_odds_score_stays_exact_when_p_rounds_to_one():
    logits = torch.tensor([[40.0, 0.0, -3.0]], dtype=torch.float32)  # p_0 = 1 in float32
    got = F.output_score(logits, torch.tensor([0]), "log-odds").item()
    want = 40.0 - math.log(math.exp(0.0) + math.exp(-3.0))  # log p0 - log(1 - p0) = z0 - logsumexp(others)
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(XWPError, match="log-odds"):
        F.output_score(logits, torch.tensor([0]), "odds")


def test_pearson_of_a_constant_is_nan():
    r = F.pearson(torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]))
    assert math.isnan(r[0]) and r[1].item() == pytest.approx(1.0)


def test_max_sensitivity_by_loop(setup):
    model, x, y, _ = setup

    def explain(inputs, target):  # gradient x input of the target logit
        inp = inputs.clone().requires_grad_(True)
        model(inp).gather(1, target[:, None]).sum().backward()
        return (inp.grad * inp).detach()

    got = F.max_sensitivity(explain, x, y, radius=0.1, n_samples=6, seed=2)
    g = torch.Generator().manual_seed(2)
    deltas = [(torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1) * 0.1 for _ in range(6)]
    for b in range(5):
        base = explain(x[b : b + 1], y[b : b + 1])
        ratios = [
            float((explain(x[b : b + 1] + d[b : b + 1], y[b : b + 1]) - base).norm() / base.norm()) for d in deltas
        ]
        assert got[b].item() == pytest.approx(max(ratios), rel=1e-9)
    assert torch.all(got > 0)
    const = F.max_sensitivity(lambda i, t: torch.ones_like(i), x, y, n_samples=3)
    assert torch.all(const == 0)


def test_sparseness_and_complexity_by_hand():
    a = torch.tensor([[0.0, 0.0, 0.0, 5.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    gini = F.sparseness(a)
    # one non-zero of four: sum_i (2i - 5) a_i / (4 * 5) = 3 * 5 / 20
    assert gini[0].item() == pytest.approx(0.75) and gini[1].item() == pytest.approx(0.0) and gini[2] == 0
    ent = F.complexity(a)
    assert ent[0].item() == pytest.approx(0.0) and ent[1].item() == pytest.approx(math.log(4))
    assert math.isnan(ent[2])
    v = torch.rand(3, 30, generator=torch.Generator().manual_seed(0))
    for row, gi, en in zip(v, F.sparseness(v), F.complexity(v), strict=True):
        s = np.sort(row.abs().numpy().astype(np.float64))
        n = s.size
        assert gi.item() == pytest.approx(sum((2 * (i + 1) - n - 1) * s[i] for i in range(n)) / (n * s.sum()))
        assert en.item() == pytest.approx(sps.entropy(s))


def test_per_image_scores_reuse_the_curves(setup):
    model, x, y, attr = setup
    out = F.per_image_scores(model, x, y, attr, output="logits", steps=6, n_runs=10, subset_size=4)
    torch.testing.assert_close(out["deletion_auc"], F.auc(F.curves(model, x, y, attr, output="logits", steps=6)))
    assert set(F.DIRECTIONS) - {"max_sensitivity"} <= set(out)
    assert all(out[k].shape == (5,) for k in F.DIRECTIONS if k in out)


def test_deactivation_scores_equal_zero_scores(trained, typeface):
    data = typeface[1].sample(3, seed=0)
    attr = torch.randn(data.images.shape, generator=torch.Generator().manual_seed(1))
    a = F.curves(trained, data.images, data.labels, attr, removal=removal.Deactivation(), steps=20)
    b = F.curves(trained, data.images, data.labels, attr, removal=removal.Zero(), steps=20)
    torch.testing.assert_close(a, b)


def test_good_maps_score_better_than_random_on_every_metric(trained, typeface):
    from xwp import XWP

    data = typeface[1].sample(16, seed=2)
    good = XWP(trained).attribute(data.images, target=data.labels)
    rnd = torch.rand(data.images.shape, generator=torch.Generator().manual_seed(0))
    for output in ("softmax", "logits"):
        g = F.per_image_scores(trained, data.images, data.labels, good, output=output, steps=50)
        r = F.per_image_scores(trained, data.images, data.labels, rnd, output=output, steps=50)
        for name in ("deletion_auc", "insertion_auc", "srg", "faithfulness_correlation", "sparseness", "complexity"):
            better = g[name].nanmean() > r[name].nanmean()
            assert better == F.DIRECTIONS[name], (output, name)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_equal_cpu(setup):
    import copy

    model, x, y, attr = setup
    cpu = F.per_image_scores(model, x, y, attr, steps=20, n_runs=10, subset_size=4)
    gpu_model = copy.deepcopy(model).cuda()
    for name in ("zero", "revert"):
        op = removal.make_removal(name, gpu_model)
        gpu = F.per_image_scores(gpu_model, x.cuda(), y.cuda(), attr.cuda(), op, steps=20, n_runs=10, subset_size=4)
        ref = F.per_image_scores(
            model, x, y, attr, removal.make_removal(name, model), steps=20, n_runs=10, subset_size=4
        )
        for k, v in ref.items():
            torch.testing.assert_close(gpu[k].cpu(), v, equal_nan=True)
    assert cpu["deletion_auc"].shape == (5,)


# ----------------------------------------------------------------- the first-layer curve shortcut


def _sparse_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, 1, 28, 28, generator=g) < 0.3) * torch.rand(n, 1, 28, 28, generator=g)).double()


@pytest.mark.parametrize("kind,order", [("deletion", "morf"), ("deletion", "lerf"), ("insertion", "morf")])
@pytest.mark.parametrize("output", ["softmax", "logits", "log-odds"])
def test_shortcut_curves_equal_the_masked_copies(kind, order, output):
    """Running sums of rank-1 first-layer changes give the curves of masked copies (ties included)."""
    import xwp

    model = xwp.MLP((784, 48, 24, 10), seed=3).double()
    torch.manual_seed(0)
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    x = _sparse_images(7)
    t = model(x.reshape(7, -1)).argmax(1)
    a = torch.randn(7, 784, dtype=torch.float64)
    a[:, ::3] = 0  # a block of ties, ordered by the seeded random tie-break
    for op in (removal.Zero(), removal.Zero(0.25), removal.Blur(1.5)):
        kw = dict(kind=kind, order=order, removal=op, output=output, steps=33, seed=5)
        masked = F.curves(model, x, t, a, shortcut=False, **kw)
        fast = F.curves(model, x, t, a, **kw)
        assert fast.shape == masked.shape == (7, 34)
        torch.testing.assert_close(fast, masked, rtol=0, atol=1e-12)


def test_shortcut_taken_only_where_it_applies(monkeypatch):
    """Linear first layer, mask-independent fill, mostly unchanged features: shortcut; otherwise masked copies."""
    from torch import nn

    calls = []
    real = F._linear_curves
    monkeypatch.setattr(F, "_linear_curves", lambda *a, **k: calls.append(1) or real(*a, **k))
    seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10)).double()
    x = _sparse_images(3)
    t = torch.tensor([1, 2, 3])
    a = torch.randn(3, 784, dtype=torch.float64)
    rel = dict(relative=True, steps=20)
    torch.testing.assert_close(F.curves(seq, x, t, a, **rel), F.curves(seq, x, t, a, shortcut=False, **rel))
    assert calls == [1]  # a plain nn.Sequential, zero removal, relative curves
    F.curves(seq, x, t, a, removal=removal.TrainMean(torch.rand(784, dtype=torch.float64)), steps=20)
    assert calls == [1]  # every pixel differs from the mean: masked copies (no gain measured there)
    F.curves(seq, x, t, a, removal=removal.NoisyLinearImputation(), steps=5)
    assert calls == [1]  # ROAD's fill depends on the mask
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)).double()
    F.curves(cnn, x, t, a, steps=5)
    assert calls == [1]  # a convolution first


def test_shortcut_holds_its_memory_bound():
    """Many images and a wide first layer are taken in chunks: the result does not depend on them."""
    import xwp

    model = xwp.MLP((784, 2000, 10), seed=1).double()  # 10 images of (201, 2000) sums per chunk
    x = _sparse_images(40, seed=2)
    t = model(x.reshape(40, -1)).argmax(1)
    a = torch.randn(40, 784, dtype=torch.float64)
    whole = F.curves(model, x, t, a, steps=200)
    parts = torch.cat(
        [
            F.curves(model, x[i : i + 7], t[i : i + 7], a[i : i + 7], steps=200, index=range(i, min(40, i + 7)))
            for i in range(0, 40, 7)
        ]
    )
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-12)

"""Metrics on hand-computed cases and against a plain per-step loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xwp.evaluation import metrics
from xwp.evaluation.metrics import METRICS, auc, average_drop, curves, feature_order, step_counts


class Linear2(nn.Module):
    """Two classes; logit of class 0 is w . x, class 1 is 0, so p0 = sigmoid(w . x)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x):
        s = x.reshape(x.shape[0], -1) @ self.w
        return torch.stack([s, torch.zeros_like(s)], 1)


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_directions_are_declared():
    assert METRICS["deletion_auc"].higher_is_better is False
    assert METRICS["insertion_auc"].higher_is_better is True
    assert METRICS["average_drop"].higher_is_better is True


def test_step_counts_follow_the_protocol():
    c = step_counts(784)
    assert len(c) == 201
    assert c[0] == 0 and c[1] == 3 and c[2] == 7 and c[40] == 156 and c[-1] == 784
    assert all(int(c[k]) == (784 * k) // 200 for k in range(201))


def test_order_is_descending_with_seeded_ties():
    a = torch.tensor([[0.1, 0.5, 0.5, -1.0, 0.5, 0.0]])
    o = feature_order(a, seed=0)[0].tolist()
    assert set(o[:3]) == {1, 2, 4} and o[3:] == [0, 5, 3]
    flat = torch.zeros(1, 50)
    assert torch.equal(feature_order(flat, 3), feature_order(flat, 3))
    assert not torch.equal(feature_order(flat, 3), feature_order(flat, 4))
    assert sorted(feature_order(flat, 3)[0].tolist()) == list(range(50))


def test_nan_attributions_come_last():
    a = torch.tensor([[float("nan"), 1.0, -5.0]])
    assert feature_order(a)[0].tolist() == [1, 2, 0]


def test_deletion_curve_by_hand():
    model = Linear2([3.0, 2.0, 1.0, 0.0])
    x = torch.ones(1, 4, dtype=torch.float64)
    attr = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    c = curves(model, x, torch.tensor([0]), attr, "deletion", steps=4)
    expected = torch.tensor([[sig(6), sig(3), sig(1), sig(0), sig(0)]], dtype=torch.float64)  # raw probabilities
    torch.testing.assert_close(c, expected)
    area = 0.25 * (expected[0, 0] / 2 + expected[0, 1:4].sum() + expected[0, 4] / 2)
    torch.testing.assert_close(auc(c)[0], area)
    torch.testing.assert_close(metrics.deletion_auc(model, x, torch.tensor([0]), attr, steps=4)[0], area)


def test_insertion_curve_by_hand():
    model = Linear2([3.0, 2.0, 1.0, 0.0])
    x = torch.ones(1, 4, dtype=torch.float64)
    attr = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    c = curves(model, x, torch.tensor([0]), attr, "insertion", steps=4)
    expected = torch.tensor([[sig(0), sig(3), sig(5), sig(6), sig(6)]], dtype=torch.float64)
    torch.testing.assert_close(c, expected)


def test_uneven_steps_remove_floor_of_d_k_over_steps():
    model = Linear2([1.0, 10.0, 100.0])
    x = torch.ones(1, 3, dtype=torch.float64)
    attr = torch.tensor([[3.0, 2.0, 1.0]])
    c = curves(model, x, torch.tensor([0]), attr, "deletion", steps=2)  # removes 0, 1, 3 features
    expected = torch.tensor([[sig(111), sig(110), sig(0)]], dtype=torch.float64)
    torch.testing.assert_close(c, expected)


def test_average_drop_by_hand():
    w = [2.0, 1.0, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    model = Linear2(w)
    x = torch.ones(2, 10, dtype=torch.float64)
    attr = torch.stack([torch.tensor(w), -torch.tensor(w)])  # right order, then reversed
    ad = average_drop(model, x, torch.tensor([0, 0]), attr)  # removes floor(0.2 * 10) = 2 features
    p = sig(sum(w))
    first = (p - sig(sum(w) - 3.0)) / p  # removes weights 2 and 1
    assert ad[0].item() == pytest.approx(first)
    assert ad[1].item() == pytest.approx(0.0)  # removing w=-1 and a 0 raises p: clipped at 0


def test_target_matters():
    model = Linear2([1.0, 1.0])
    x = torch.ones(1, 2, dtype=torch.float64)
    attr = torch.tensor([[1.0, 0.0]])
    c0 = curves(model, x, torch.tensor([0]), attr, steps=2)
    c1 = curves(model, x, torch.tensor([1]), attr, steps=2)
    torch.testing.assert_close(c1[0, -1], torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(c0[0, 1], torch.tensor(sig(1), dtype=torch.float64))
    assert c0[0, 0] == pytest.approx(sig(2)) and c1[0, 0] == pytest.approx(1 - sig(2))
    assert c1[0, 1] == pytest.approx(1 - sig(1))


def test_batched_curves_equal_a_plain_loop(trained, typeface):
    data = typeface[1].sample(5, seed=1)
    attr = torch.randn(data.images.shape, generator=torch.Generator().manual_seed(0))
    fast = curves(trained, data.images, data.labels, attr, "deletion", rows=97)  # odd chunking on purpose
    rel = curves(trained, data.images, data.labels, attr, "deletion", relative=True)  # divided by p0, clipped
    order = feature_order(attr)
    counts = step_counts(784)
    for b in range(5):
        x = data.images[b].reshape(-1)
        p0 = torch.softmax(trained(x[None]), 1)[0, data.labels[b]]
        for k in (0, 1, 40, 117, 200):
            xk = x.clone()
            xk[order[b, : counts[k]]] = 0
            pk = torch.softmax(trained(xk[None]), 1)[0, data.labels[b]]
            assert fast[b, k].item() == pytest.approx(pk.item(), rel=1e-5, abs=1e-7)
            assert rel[b, k].item() == pytest.approx(min(1.0, (pk / p0).item()), rel=1e-5, abs=1e-7)


def test_good_attributions_beat_random(trained, typeface):
    from xwp import XWP

    data = typeface[1].sample(32, seed=2)
    good = XWP(trained).attribute(data.images, target=data.labels)
    rnd = torch.rand(data.images.shape, generator=torch.Generator().manual_seed(0))
    assert (
        metrics.deletion_auc(trained, data.images, data.labels, good).mean()
        < metrics.deletion_auc(trained, data.images, data.labels, rnd).mean()
    )
    assert (
        average_drop(trained, data.images, data.labels, good).mean()
        > average_drop(trained, data.images, data.labels, rnd).mean()
    )


def test_background_value_for_sensitivity_checks():
    model = Linear2([3.0, 2.0, 1.0, 0.0])
    x = torch.ones(1, 4, dtype=torch.float64)
    attr = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    c = curves(model, x, torch.tensor([0]), attr, "deletion", steps=4, background=0.5)
    expected = torch.tensor([[sig(6), sig(4.5), sig(3.5), sig(3), sig(3)]], dtype=torch.float64)
    torch.testing.assert_close(c, expected)
    ad = average_drop(
        Linear2([2.0] + [0.0] * 9),
        torch.ones(1, 10, dtype=torch.float64),
        torch.tensor([0]),
        torch.arange(10.0, 0, -1)[None],
        background=0.5,
    )
    assert ad[0].item() == pytest.approx((sig(2) - sig(1)) / sig(2))


def test_each_metric_computes_its_own_score():
    """Metric.score equals faithfulness.per_image_scores (one computation, two entry points), in both spaces."""
    from xwp.evaluation import faithfulness as F
    from xwp.evaluation.removal import Zero

    model = Linear2([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 6, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 1, 0])
    attr = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    idx = torch.tensor([4, 9, 2])
    for output in ("softmax", "logits"):
        want = F.per_image_scores(model, x, t, attr, Zero(), output, seed=2, index=idx, n_runs=100, subset_size=2)
        for name, metric in METRICS.items():
            if name in ("max_sensitivity", "faithfulness_correlation"):
                continue
            got = metric.score(model, x, t, attr, seed=2, output=output, index=idx)
            torch.testing.assert_close(got.double(), want[name].double(), rtol=0, atol=0, msg=f"{name} {output}")
        c = curves(model, x, t, attr, "deletion", seed=2, output=output, index=idx)
        torch.testing.assert_close(METRICS["deletion_auc"].from_curves(c), want["deletion_auc"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a curve metric"):
        METRICS["average_drop"].from_curves(c)
    explain = lambda inp, tt: inp * 2  # noqa: E731
    ms = METRICS["max_sensitivity"].score(model, x, t, attr, explain=explain)
    assert ms.shape == (3,) and torch.isfinite(ms).all()


def test_directions_come_from_faithfulness():
    from xwp.evaluation import faithfulness as F

    assert {m: METRICS[m].higher_is_better for m in METRICS} == F.DIRECTIONS
    assert list(METRICS)[:6] == list(metrics.PINNED)


def test_better_follows_the_direction():
    assert METRICS["average_drop"].better(0.5, 0.4) and not METRICS["average_drop"].better(0.4, 0.5)
    assert METRICS["deletion_auc"].better(0.1, 0.2) and not METRICS["deletion_auc"].better(0.2, 0.1)
    assert not METRICS["insertion_auc"].better(0.3, 0.3)  # strictly better only
    assert [m.short for m in METRICS.values() if m.in_paper_table] == ["Del. AUC", "AD"]


def test_tie_breaking_does_not_depend_on_the_batch():
    """An image's order depends on (seed, its index), not on the batch it is in or the batch size."""
    a = torch.zeros(6, 40)
    a[:, :5] = torch.arange(5.0, 0, -1)  # 5 ranked features, 35 tied zeros
    whole = feature_order(a, seed=7, index=torch.arange(10, 16))
    parts = torch.cat([feature_order(a[:2], 7, torch.arange(10, 12)), feature_order(a[2:], 7, torch.arange(12, 16))])
    assert torch.equal(whole, parts)
    assert torch.equal(whole[:, :5], torch.arange(5).expand(6, 5))
    assert not torch.equal(whole[0], whole[1])  # different images break ties differently
    assert torch.equal(feature_order(a[:3], 7), feature_order(a[:3], 7, torch.arange(3)))
    with pytest.raises(Exception, match="index has 2 entries"):
        feature_order(a[:3], 7, torch.arange(2))

"""Removal operators on tiny cases: each against a plain definition, ROAD against a dense solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import random_trained_mlp
from xwp.errors import XWPError
from xwp.evaluation import removal
from xwp.evaluation.removal import REMOVALS, make_removal


@pytest.fixture
def mlp():
    return random_trained_mlp((16, 7, 5, 3), seed=1)


def batch(n=4, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    keep = torch.rand(n, d, generator=g) > 0.4
    return x, keep


def test_registry_builds_every_operator(mlp):
    for name in REMOVALS:
        op = make_removal(name, mlp, train_mean=torch.full((16,), 0.3))
        x, keep = batch()
        assert op.logits(mlp, x, keep).shape == (4, 3)
    with pytest.raises(XWPError, match="unknown removal"):
        make_removal("nope")
    with pytest.raises(XWPError, match="train_mean"):
        make_removal("mean")


def test_zero_and_mean_replace_only_removed_features(mlp):
    x, keep = batch()
    flat = x.reshape(4, -1)
    z = removal.Zero().fill(x, keep).reshape(4, -1)
    assert torch.equal(z[keep], flat[keep]) and torch.all(z[~keep] == 0)
    mean = torch.linspace(0, 1, 16, dtype=torch.float64)
    m = removal.TrainMean(mean).fill(x, keep).reshape(4, -1)
    for i in range(4):
        for j in range(16):
            assert m[i, j] == (flat[i, j] if keep[i, j] else mean[j])
    torch.testing.assert_close(removal.Zero().logits(mlp, x, keep), mlp(z))


def test_blur_of_a_constant_image_is_the_constant_and_blurs_a_dot():
    x = torch.full((1, 1, 6, 6), 0.7, dtype=torch.float64)
    torch.testing.assert_close(removal.gaussian_blur(x, 1.0), x)
    dot = torch.zeros(1, 1, 11, 11, dtype=torch.float64)
    dot[0, 0, 5, 5] = 1.0
    b = removal.gaussian_blur(dot, 1.0)[0, 0]
    assert b[5, 5] < 1 and b[5, 6] > 0 and b[5, 6] == pytest.approx(b[6, 5].item())
    assert b.sum().item() == pytest.approx(1.0)  # no mass lost or reflected away from the border
    g = torch.exp(-(torch.arange(-3.0, 4.0, dtype=torch.float64) ** 2) / 2)
    assert b[5, 6].item() == pytest.approx((g[3] * g[4] / g.sum() ** 2).item())
    keep = torch.ones(1, 121, dtype=torch.bool)
    keep[0, 60] = False
    out = removal.Blur(sigma=1.0).fill(dot, keep)
    assert out[0, 0, 5, 5] == b[5, 5] and out[0, 0, 5, 6] == 0


@pytest.mark.parametrize("name", list(REMOVALS))
def test_masked_logits_equal_logits_of_the_repeated_images(name, mlp):
    # masked_logits is the path every score takes; blur overrides it to blur each image once
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    keep = torch.rand(3 * 5, 16, generator=g) > 0.4
    op = make_removal(name, mlp, train_mean=torch.full((16,), 0.2, dtype=torch.float64))
    repeated = x.repeat_interleave(5, 0)
    torch.testing.assert_close(
        op.masked_logits(mlp, x, 5, keep), op.logits(mlp, repeated, keep), rtol=1e-12, atol=1e-12
    )


def dense_road(image, keep):
    """ROAD's equations written out one pixel at a time, solved densely."""
    c, h, w = image.shape
    removed = [(r, q) for r in range(h) for q in range(w) if not keep[r * w + q]]
    pos = {p: k for k, p in enumerate(removed)}
    a = np.zeros((len(removed), len(removed)))
    b = np.zeros((len(removed), c))
    for k, (r, q) in enumerate(removed):
        for (dr, dq), wt in removal.ROAD_NEIGHBOURS:
            rr, qq = r + dr, q + dq
            if 0 <= rr < h and 0 <= qq < w:
                a[k, k] += wt
                if keep[rr * w + qq]:
                    b[k] += wt * image[:, rr, qq]
                else:
                    a[k, pos[(rr, qq)]] -= wt
    v = np.linalg.solve(a, b)
    out = image.copy()
    for k, (r, q) in enumerate(removed):
        out[:, r, q] = v[k]
    return out


def test_road_equals_a_dense_solve():
    rng = np.random.default_rng(0)
    image = rng.random((1, 5, 6))
    keep = rng.random(30) > 0.5
    keep[0] = True
    got = removal.road_impute(image, keep, noise=0.0)
    np.testing.assert_allclose(got, dense_road(image, keep), atol=1e-7)
    np.testing.assert_array_equal(got.reshape(-1)[keep], image.reshape(-1)[keep])
    # each removed pixel is the weighted mean of its neighbours
    r, q = divmod(int(np.flatnonzero(~keep)[0]), 6)
    num = den = 0.0
    for (dr, dq), wt in removal.ROAD_NEIGHBOURS:
        if 0 <= r + dr < 5 and 0 <= q + dq < 6:
            num, den = num + wt * got[0, r + dr, q + dq], den + wt
    assert got[0, r, q] == pytest.approx(num / den, abs=1e-7)


def test_road_noise_is_seeded_and_a_fully_removed_image_goes_to_zero():
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    keep = torch.rand(2, 25, generator=torch.Generator().manual_seed(2)) > 0.5
    op = removal.NoisyLinearImputation(noise=0.01, seed=3)
    assert torch.equal(op.fill(x, keep), op.fill(x, keep))
    clean = removal.NoisyLinearImputation(noise=0.0).fill(x, keep)
    diff = (op.fill(x, keep) - clean).reshape(2, -1)
    assert torch.all(diff[keep] == 0) and 0.003 < diff[~keep].std() < 0.03
    blank = removal.NoisyLinearImputation(noise=0.0).fill(x, torch.zeros(2, 25, dtype=torch.bool))
    assert blank.abs().max() < 1e-6
    # an image's noise does not depend on the other rows of its batch (so scores do not depend on batch size)
    one = torch.cat([op.fill(x[i : i + 1], keep[i : i + 1]) for i in range(2)])
    assert torch.equal(op.fill(x, keep), one)
    assert not torch.equal(op.fill(x, keep), removal.NoisyLinearImputation(noise=0.01, seed=4).fill(x, keep))


def test_deactivation_equals_zero_removal_for_an_mlp(mlp, trained):
    x, keep = batch(6)
    torch.testing.assert_close(removal.Deactivation().logits(mlp, x, keep), removal.Zero().logits(mlp, x, keep))
    x32 = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    keep32 = torch.rand(3, 784, generator=torch.Generator().manual_seed(1)) > 0.5
    torch.testing.assert_close(
        removal.Deactivation().logits(trained, x32, keep32), removal.Zero().logits(trained, x32, keep32)
    )
    seq = torch.nn.Sequential(torch.nn.Flatten(), *list(mlp.net)).eval()
    torch.testing.assert_close(removal.Deactivation().logits(seq, x, keep), removal.Zero().logits(mlp, x, keep))


def test_weight_reversion_matches_a_model_with_reverted_columns(mlp):
    x, keep = batch(3)
    got = removal.WeightReversion().logits(mlp, x, keep)
    w0 = mlp.initial_state()["0.weight"]
    for i in range(3):
        other = mlp.initial_model()  # copy, then set the trained weights back except removed columns
        with torch.no_grad():
            for p, q in zip(other.net.parameters(), mlp.net.parameters(), strict=True):
                p.copy_(q)
            other.linears[0].weight[:, ~keep[i]] = w0[:, ~keep[i]]
        torch.testing.assert_close(got[i], other(x[i : i + 1])[0])
    # keeping everything is the model itself; an explicit initial_model gives the same result
    full = torch.ones_like(keep)
    torch.testing.assert_close(removal.WeightReversion().logits(mlp, x, full), mlp(x))
    torch.testing.assert_close(removal.WeightReversion(mlp.initial_model()).logits(mlp, x, keep), got)
    assert REMOVALS["revert"][0].favours == "xwp"


def test_deactivation_of_a_non_fully_connected_network_is_a_clear_error():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 3)).double()
    x, keep = batch(2)
    try:
        import xwp.attribution.deactivation  # noqa: F401
    except ImportError:
        with pytest.raises(XWPError, match="xwp.attribution.deactivation"):
            removal.Deactivation().logits(conv, x, keep)

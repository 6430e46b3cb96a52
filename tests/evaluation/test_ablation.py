"""The initial-state ablation: the exact XWP(zeros) = 2 x Occlusion identity, and the variants."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import xwp
from tests.support import random_trained_mlp
from xwp import CNN, XWP, make_method
from xwp.evaluation import ablation, scales


@pytest.fixture(scope="module")
def tiny():
    model = random_trained_mlp((16, 12, 8, 3), seed=4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64)
    x[x < 0.3] = 0.0
    return model, x, model(x).argmax(1)


def test_xwp_with_zero_initial_state_is_twice_occlusion_in_float64(tiny):
    model, x, y = tiny
    zeros = ablation.variant_initial_model(model, "zeros")
    xwp = XWP(model, zeros).attribute(x, target=y)
    occ = ablation.occlusion_1x1(model, x, y)
    np.testing.assert_allclose(xwp.numpy(), 2 * occ.numpy(), rtol=0, atol=1e-12)
    # Captum's Occlusion agrees up to its float32 cast (captum 0.9: single_attrib.float() / weight)
    captum = make_method("occlusion", model, window=1, baselines=0.0).attribute(x, target=y)
    np.testing.assert_allclose(captum.numpy(), occ.numpy(), rtol=1e-6, atol=1e-7)
    # and by hand for one pixel: f(x) - f(x without pixel) on the target probability
    i = int(torch.nonzero(x[0].reshape(-1))[0])
    xi = x[0].clone().reshape(-1)
    xi[i] = 0
    p = torch.softmax(model(x[:1]), 1)[0, y[0]] - torch.softmax(model(xi[None]), 1)[0, y[0]]
    assert xwp[0].reshape(-1)[i].item() == pytest.approx(2 * p.item(), rel=1e-12)
    assert torch.all(xwp.reshape(5, -1)[x.reshape(5, -1) == 0] == 0)


def test_xwp_zeros_identity_on_the_trained_typeface_model(trained, typeface):
    model = copy.deepcopy(trained).double()  # the fixture is shared: never convert it in place
    data = typeface[1].sample(4, seed=0)
    x, y = data.images.double(), data.labels
    maps = ablation.ablation_maps(model, x, y, variants=("zeros",))
    diff = (maps["xwp_zeros"] - 2 * maps["occlusion"]).abs().max().item()
    assert diff < 1e-12 and maps["occlusion"].abs().max() > 1e-3


def test_variants(tiny):
    model, _, _ = tiny
    w0 = model.initial_state()["0.weight"]
    assert torch.equal(ablation.variant_weight(model, "true"), w0)
    assert torch.all(ablation.variant_weight(model, "zeros") == 0)
    perm = ablation.variant_weight(model, "permuted", seed=1)
    assert not torch.equal(perm, w0) and torch.equal(perm.reshape(-1).sort().values, w0.reshape(-1).sort().values)
    fresh = ablation.variant_weight(model, "fresh", seed=1)
    assert not torch.equal(fresh, w0) and fresh.abs().max() <= 1 / 4 + 1e-12  # torch default: U(-1/sqrt(16), ...)
    assert torch.equal(fresh, ablation.variant_weight(model, "fresh", seed=1))
    other = ablation.variant_initial_model(model, "zeros")
    assert torch.equal(other.linears[1].weight, model.linears[1].weight)  # only the first layer differs
    assert torch.equal(model.initial_state()["0.weight"], w0)  # the model is untouched
    xwp_true = ablation.ablation_maps(model, tiny[1], tiny[2], variants=("true",), occlusion=False)["xwp_true"]
    torch.testing.assert_close(xwp_true, XWP(model).attribute(tiny[1], target=tiny[2]))


def test_rank_agreement_and_scores(tiny):
    model, x, y = tiny
    maps = ablation.ablation_maps(model, x, y)
    assert set(maps) == {"xwp_true", "xwp_zeros", "xwp_fresh", "xwp_permuted", "occlusion"}
    table = ablation.rank_agreement(maps, x)
    assert len(table) == 10
    row = table[(table.a == "xwp_zeros") & (table.b == "occlusion")].iloc[0]
    assert row["median"] == pytest.approx(1.0)  # twice the map: the same ranking
    assert table["median"].between(-1, 1).all()
    scores = ablation.ablation_scores(model, x, y, maps, steps=8, n_runs=20, subset_size=4)
    assert len(scores) == 25 and {"deletion_auc", "srg", "faithfulness_correlation"} <= set(scores.columns)
    z = scores[scores.method == "xwp_zeros"].reset_index(drop=True)
    o = scores[scores.method == "occlusion"].reset_index(drop=True)
    np.testing.assert_allclose(z["deletion_auc"], o["deletion_auc"])  # same order, same curve


def eq4_score(model, x, t, space):
    """The paper's eq.-4 score sum_n I_n out_n in ``space`` (float64, one image)."""
    out = scales.output_for(space, "xwp")
    with torch.no_grad():
        logits = model(x)
    o = torch.softmax(logits, 1) if out == "softmax" else logits if out == "logits" else out(logits)
    ind = -torch.ones_like(o)
    ind[:, t] = 1
    return float((ind * o).sum())


@pytest.mark.parametrize("space", ["probability", "log-odds", "logits"])
def test_initial_state_effect_against_a_slow_weight_swap_loop(tiny, space):
    model, x, _ = tiny
    before = copy.deepcopy(model.state_dict())
    eff = ablation.initial_state_effect(model, x, space=space)
    w0 = model.initial_state()["0.weight"]
    for b in range(x.shape[0]):
        xb, t = x[b : b + 1], int(eff.target[b])
        base = eq4_score(model, xb, t, space)
        for i in range(16):
            swapped = {}
            for name, column in (("zero", torch.zeros(12, dtype=torch.float64)), ("init", w0[:, i])):
                m = copy.deepcopy(model)
                with torch.no_grad():
                    m.linears[0].weight[:, i] = column  # really swap pixel i's first-layer weights
                swapped[name] = eq4_score(m, xb, t, space)
            got = {k: float(getattr(eff, k)[b].reshape(-1)[i]) for k in ("xwp", "zero_state", "difference")}
            assert got["zero_state"] == pytest.approx(base - swapped["zero"], rel=1e-9, abs=1e-12)
            assert got["xwp"] == pytest.approx(base - swapped["init"], rel=1e-9, abs=1e-12)
            assert got["difference"] == pytest.approx(swapped["zero"] - swapped["init"], rel=1e-9, abs=1e-12)
            if space in ("probability", "log-odds"):  # the pixel removed from the input instead
                xi = xb.clone().reshape(1, -1)
                xi[0, i] = 0
                with torch.no_grad():
                    occ = scales.target_score(model(xb), t, space) - scales.target_score(model(xi), t, space)
                factor = 2 if space == "probability" else 1  # p_t - (1 - p_t) = 2 p_t - 1
                assert got["zero_state"] == pytest.approx(factor * float(occ), rel=1e-9, abs=1e-12)
        fg = xb.reshape(-1) != 0
        rho = spearmanr(eff.xwp[b].reshape(-1)[fg], eff.zero_state[b].reshape(-1)[fg]).statistic
        assert eff.spearman[b] == pytest.approx(rho) and eff.pixels[b] == int(fg.sum())
    torch.testing.assert_close(eff.xwp, XWP(model, output=scales.output_for(space, "xwp")).attribute(x, eff.target))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched


def test_initial_state_effect_on_a_cnn_is_twice_occlusion():
    model = CNN(channels=(3,), kernel=3, hidden=(6,), n_classes=4, image_size=6, seed=2).eval()
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[x < 0.4] = 0
    x = x.float().double()  # values a float32 input holds exactly
    eff = ablation.initial_state_effect(model, x.float(), target=1)  # a float32 model and input
    m64 = copy.deepcopy(model).double()
    p = torch.softmax(m64(x), 1)[:, 1].detach()
    for b in range(2):
        for i in range(36):
            xi = x[b : b + 1].clone().reshape(1, -1)
            xi[0, i] = 0
            occ = p[b] - torch.softmax(m64(xi.reshape(1, 1, 6, 6)), 1)[0, 1].detach()
            assert float(eff.zero_state[b].reshape(-1)[i]) == pytest.approx(2 * float(occ), rel=1e-9, abs=1e-13)
    torch.testing.assert_close(eff.xwp, XWP(m64).attribute(x, target=1))
    torch.testing.assert_close(eff.difference, eff.xwp - eff.zero_state, rtol=0, atol=0)
    assert eff.xwp.dtype == torch.float64 and eff.xwp.shape == x.shape


def test_initial_state_effect_needs_the_initial_state():
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with pytest.raises(xwp.XWPError, match="initial state"):
        ablation.initial_state_effect(plain, torch.rand(1, 16))
    with pytest.raises(xwp.XWPError, match="score space"):
        ablation.initial_state_effect(random_trained_mlp((16, 4, 3)), torch.rand(1, 16), space="odds")

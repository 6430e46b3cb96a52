"""The initial-state ablation: the exact XWP(zeros) = 2 x Occlusion identity, and the variants."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.conftest import random_trained_mlp
from xwp import XWP, ablation, make_method


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

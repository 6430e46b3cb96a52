"""Sanity checks on a tiny MLP: cascading randomisation with the initial state fixed, label randomisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as sps

from tests.support import random_trained_mlp
from xwp import XWP
from xwp.evaluation import sanity


@pytest.fixture(scope="module")
def tiny():
    model = random_trained_mlp((16, 12, 8, 3), seed=2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    x[x < 0.35] = 0.0
    y = model(x).argmax(1)
    return model, x, y


def test_spearman_rows_match_scipy():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 20, generator=g), torch.randn(3, 20, generator=g)
    mask = torch.rand(3, 20, generator=g) > 0.3
    got = sanity.spearman_rows(a, b, mask)
    for i in range(3):
        m = mask[i].numpy()
        assert got[i] == pytest.approx(sps.spearmanr(a[i].numpy()[m], b[i].numpy()[m]).statistic)
    assert np.isnan(sanity.spearman_rows(torch.ones(1, 5), torch.randn(1, 5))[0])


def test_randomised_models_cascade_from_the_top_and_keep_the_initial_state(tiny):
    model, _, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = list(sanity.randomised_models(model, seed=0))
    assert [(name, depth) for name, depth, _ in steps] == [("net.4", 1), ("net.2", 2), ("net.0", 3)]
    for name, depth, copy in steps:
        for layer_name, layer in sanity.parameter_layers(copy):
            original = model.get_submodule(layer_name)
            changed = not torch.equal(layer.weight, original.weight)
            assert changed == (layer_name >= name), (name, layer_name)  # net.4 >= net.2 >= net.0
        for k, v in copy.initial_state().items():
            assert torch.equal(v, model.initial_state()[k])
        assert depth <= 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched


def test_cascading_randomisation_table_equals_a_manual_computation(tiny):
    model, x, y = tiny
    table = sanity.cascading_randomisation(model, x, y, ["xwp", "saliency", "random"], seed=0)
    assert list(table.columns[:5]) == ["method", "layer", "depth", "spearman_all", "spearman_nonzero"]
    assert len(table) == 9
    _, _, full = list(sanity.randomised_models(model, seed=0))[-1]
    a = XWP(model).attribute(x, target=y)
    b = XWP(full).attribute(x, target=y)  # the initial state comes from the copy's (unchanged) buffers
    fg = (x != 0).reshape(6, -1)
    want = [sps.spearmanr(a[i].reshape(-1)[fg[i]], b[i].reshape(-1)[fg[i]]).statistic for i in range(6)]
    row = table[(table.method == "xwp") & (table.layer == "net.0")].iloc[0]
    assert row.spearman_nonzero == pytest.approx(np.mean(want))
    rnd = table[table.method == "random"]
    assert np.allclose(rnd.spearman_all, 1.0) and not rnd.passed.any()  # a model-independent map fails
    assert table[(table.method != "random") & (table.depth == 3)].passed.all()


def test_label_randomisation_on_a_small_model():
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(3, 16, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (300,), generator=g)
    images = (centers[labels] + 0.1 * torch.randn(300, 16, generator=g, dtype=torch.float64)).clamp(min=0)
    images = images.reshape(300, 1, 4, 4)
    table = sanity.label_randomisation(
        images[:240], labels[:240], images[240:], labels[240:], ["xwp", "random"], hidden=(16,), epochs=30, lr=1e-2
    )
    assert list(table.method) == ["xwp", "random"]
    assert table.accuracy_true.iloc[0] > 0.9 and table.accuracy_shuffled.iloc[0] < 0.7
    assert table.set_index("method").loc["random", "spearman_all"] == pytest.approx(1.0)
    assert table.set_index("method").loc["xwp", "passed"]

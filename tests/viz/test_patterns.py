"""First-layer weight patterns and class drive (xwp.viz.patterns) against slow, obviously correct references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import random_trained_mlp
from xwp.errors import XWPError
from xwp.models import MLP
from xwp.viz.patterns import class_drive, first_layer, grid_png, neuron_png, neuron_stats, weight_patterns


def _finite_difference_drive(model: MLP, a0: torch.Tensor, linear: bool, eps: float = 1e-6) -> np.ndarray:
    """d logit_c / d a_j by central differences, one unit at a time, through the layers after the first.

    ``linear``: every later ReLU open (the drive of a unit when nothing downstream is gated).
    """

    def head(a: torch.Tensor) -> torch.Tensor:
        h = a
        for k, layer in enumerate(model.linears[1:]):
            h = layer(h)
            if k < len(model.linears) - 2 and not linear:
                h = h.relu()
        return h[0]

    out = np.zeros((model.sizes[-1], model.sizes[1]))
    with torch.no_grad():
        for j in range(model.sizes[1]):
            step = torch.zeros_like(a0)
            step[0, j] = eps
            out[:, j] = ((head(a0 + step) - head(a0 - step)) / (2 * eps)).numpy()
    return out


@pytest.mark.parametrize("sizes", [(784, 16, 12, 10), (784, 16, 12, 8, 10)])
def test_class_drive_at_a_reference_matches_finite_differences(sizes):
    model = random_trained_mlp(sizes, seed=1)
    reference = torch.rand(1, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    drive = class_drive(model, reference)
    with torch.no_grad():
        a0 = model.linears[0](reference).relu()  # (1, H)
    np.testing.assert_allclose(drive, _finite_difference_drive(model, a0, linear=False), rtol=1e-6, atol=1e-8)
    assert drive.shape == (10, 16)


@pytest.mark.parametrize("sizes", [(784, 16, 12, 10), (784, 16, 12, 8, 10)])
def test_class_drive_without_reference_opens_every_relu(sizes):
    model = random_trained_mlp(sizes, seed=2)
    a0 = torch.zeros(1, sizes[1], dtype=torch.float64)
    expected = _finite_difference_drive(model, a0, linear=True)
    np.testing.assert_allclose(class_drive(model, None), expected, rtol=1e-6, atol=1e-8)


def test_class_drive_of_shallow_networks():
    one = random_trained_mlp((784, 16, 10), seed=3)
    w2 = one.linears[1].weight.detach().numpy()
    np.testing.assert_allclose(class_drive(one, None), w2)
    np.testing.assert_allclose(class_drive(one, torch.rand(1, 784, dtype=torch.float64)), w2)  # nothing is gated
    none = random_trained_mlp((784, 10), seed=3)
    np.testing.assert_array_equal(class_drive(none, None), np.eye(10))


def test_first_layer_views():
    model = random_trained_mlp((784, 16, 10), seed=4)
    initial = model.initial_model()
    w = model.linears[0].weight.detach().numpy()
    w0 = initial.linears[0].weight.detach().numpy()
    np.testing.assert_array_equal(first_layer(model, initial, "trained"), w)
    np.testing.assert_array_equal(first_layer(model, initial, "initial"), w0)
    np.testing.assert_array_equal(first_layer(model, initial, "change"), w - w0)
    np.testing.assert_array_equal(first_layer(model, None, "trained"), w)
    with pytest.raises(XWPError, match="no initial state"):
        first_layer(model, None, "change")


def test_weight_patterns_orders_and_activation_weighting():
    model = random_trained_mlp((784, 16, 12, 10), seed=5)
    initial = model.initial_model()
    image = torch.rand(1, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = model.linears[0].weight.detach().numpy()
    b = model.linears[0].bias.detach().numpy()
    x = image.reshape(-1).numpy()
    activation = np.array([max(0.0, float(w[j] @ x + b[j])) for j in range(16)])  # one unit at a time

    plain = weight_patterns(model, initial, "trained", "index")
    assert plain.order == list(range(16)) and plain.scores is None and plain.activation is None

    by_norm = weight_patterns(model, initial, "change", "norm")
    norms = [float(np.sqrt(((w[j] - initial.linears[0].weight[j].detach().numpy()) ** 2).sum())) for j in range(16)]
    assert by_norm.order == sorted(range(16), key=lambda j: -norms[j])
    assert by_norm.label == "trained − initial"

    weighted = weight_patterns(model, initial, "trained", "drive", cls=3, image=image, reference=image.reshape(1, -1))
    np.testing.assert_allclose(weighted.activation, activation, rtol=1e-12)
    np.testing.assert_allclose(weighted.patterns, w * activation[:, None], rtol=1e-12)
    np.testing.assert_allclose(weighted.drive, class_drive(model, image.reshape(1, -1)))
    assert weighted.order == sorted(range(16), key=lambda j: -weighted.drive[3, j])
    assert weighted.label == "trained weights × activation"


def test_neuron_stats_and_figures():
    model = random_trained_mlp((784, 16, 10), seed=6)
    initial = model.initial_model()
    wp = weight_patterns(model, initial)
    classes = [f"c{i}" for i in range(10)]
    stats = neuron_stats(model, initial, wp, 5, classes).set_index("quantity")["value"]
    w = model.linears[0].weight[5].detach().numpy()
    w0 = initial.linears[0].weight[5].detach().numpy()
    assert stats["weight norm ‖Wⱼ‖"] == pytest.approx(np.sqrt((w**2).sum()))
    assert stats["min weight"] == w.min() and stats["max weight"] == w.max()
    assert stats["bias"] == pytest.approx(float(model.linears[0].bias[5].detach()))
    assert stats["change from init ‖Wⱼ − Wⱼ⁰‖"] == pytest.approx(np.sqrt(((w - w0) ** 2).sum()))
    best = int(np.argmax(model.linears[1].weight[:, 5].detach().numpy()))
    assert stats[f"strongest drive: class c{best}"] == pytest.approx(float(model.linears[1].weight[best, 5].detach()))
    assert "change from init ‖Wⱼ − Wⱼ⁰‖" not in neuron_stats(model, None, wp, 5, classes)["quantity"].tolist()

    grid = grid_png(wp, 8, "index", "c0")
    assert grid[:8] == b"\x89PNG\r\n\x1a\n" and grid_png(wp, 8, "index", "c0") is grid  # drawn once
    unit = neuron_png(wp, 2)
    assert neuron_png(wp, 2) is unit and neuron_png(wp, 3) is not unit
    assert wp.figures["unit"][0] == 3  # only the latest unit is kept

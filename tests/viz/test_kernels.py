"""xwp.viz.kernels: a CNN's first-layer kernels, initial | trained | change, and their numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xwp.errors import XWPError
from xwp.models import CNN, MLP
from xwp.viz import kernels


def moved_cnn(in_channels: int = 1) -> CNN:
    model = CNN(channels=(5, 4), kernel=3, hidden=(), in_channels=in_channels, seed=0)
    with torch.no_grad():
        model.net[0].weight.add_(
            0.2 * torch.randn(model.net[0].weight.shape, generator=torch.Generator().manual_seed(1))
        )
    return model.eval()


def test_first_kernels_are_copies_of_both_states():
    model = moved_cnn()
    before = model.net[0].weight.detach().clone()
    w0, w1 = kernels.first_kernels(model, model.initial_model())
    assert w0.shape == w1.shape == (5, 1, 3, 3) and w0.dtype == np.float64
    np.testing.assert_array_equal(w1, before.double().numpy())
    np.testing.assert_array_equal(w0, model.initial_state()["0.weight"].double().numpy())
    w1[:] = 0
    assert torch.equal(model.net[0].weight, before), "the model is never modified"
    assert kernels.first_kernels(model)[0] is None
    with pytest.raises(XWPError, match="not a convolution"):
        kernels.first_kernels(MLP((784, 8, 10)))


def test_mosaic_puts_channel_c_in_row_c_div_ncols():
    w = np.arange(5 * 2 * 2, dtype=float).reshape(5, 2, 2)
    m = kernels.mosaic(w, 3)
    assert m.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(m[0:2, 3:5], w[1])
    np.testing.assert_array_equal(m[3:5, 3:5], w[4])
    assert np.isnan(m[2]).all() and np.isnan(m[3:5, 6:8]).all()  # gaps and the empty last tile


def test_kernel_stats_against_a_loop():
    model = moved_cnn(in_channels=2)
    w0, w1 = kernels.first_kernels(model, model.initial_model())
    stats = kernels.kernel_stats(w0, w1)
    for c in range(5):
        a, b = w0[c].ravel(), w1[c].ravel()
        row = stats.iloc[c]
        assert row["‖W₀‖ initial"] == pytest.approx(np.sqrt((a * a).sum()))
        assert row["‖W − W₀‖ change"] == pytest.approx(np.sqrt(((b - a) ** 2).sum()))
        assert row["change / ‖W₀‖"] == pytest.approx(np.sqrt(((b - a) ** 2).sum() / (a * a).sum()))
        assert row["cos(W₀, W)"] == pytest.approx(a @ b / np.sqrt((a * a).sum() * (b * b).sum()))
    assert list(kernels.kernel_stats(None, w1).columns) == ["channel", "‖W‖ trained"]


def test_figures_draw_and_refuse_channels_that_do_not_exist():
    model = moved_cnn(in_channels=2)
    w0, w1 = kernels.first_kernels(model, model.initial_model())
    for png in (
        kernels.kernel_grid_png(w0, w1, in_channel=1, dpi=40),
        kernels.kernel_grid_png(None, w1, dpi=40),
        kernels.kernel_channel_png(w0, w1, 4, in_channel=1, dpi=40),
    ):
        assert png.startswith(b"\x89PNG")
    with pytest.raises(XWPError, match="channel 5 does not exist"):
        kernels.kernel_channel_figure(w0, w1, 5)
    with pytest.raises(XWPError, match="input channel 2 does not exist"):
        kernels.kernel_grid_figure(w0, w1, in_channel=2)

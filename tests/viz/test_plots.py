"""Heatmap colouring: the app's fast tiles and the matplotlib figures show a map the same way."""

from __future__ import annotations

import numpy as np

from xwp.viz import plots


def test_all_positive_maps_are_shown_relative_to_their_mean_in_tiles_and_figures():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 1.0, (28, 28))  # like RISE: no value <= 0
    shown, s = plots.display_map(a)
    np.testing.assert_allclose(shown, a - a.mean())
    assert s == plots.symmetric_limit(a - a.mean())
    tile = plots.heatmap_rgb(a)
    np.testing.assert_array_equal(tile, plots.heatmap_rgb(a - a.mean(), s))
    red, blue = tile[..., 0].astype(int) - tile[..., 2], tile[..., 2].astype(int) - tile[..., 0]
    assert (red > 0).any() and (blue > 0).any()  # not uniformly red
    # a shared limit means the maps are compared on one scale: drawn as they are
    shown_shared, s_shared = plots.display_map(a, 2.0)
    np.testing.assert_array_equal(shown_shared, a)
    assert s_shared == 2.0


def test_signed_maps_are_drawn_as_they_are():
    a = np.linspace(-1, 2, 784).reshape(28, 28)
    shown, s = plots.display_map(a)
    np.testing.assert_array_equal(shown, a)
    assert s == plots.symmetric_limit(a)

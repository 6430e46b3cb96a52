"""RISE (xwp/attribution/rise.py) against its Monte-Carlo identity and a per-image loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.support import random_trained_mlp
from xwp.attribution import RISE, rise_masks


class OnePixel(nn.Module):
    """A classifier whose class-0 logit is 10 * x[pixel]: only that pixel matters."""

    def __init__(self, pixel, side=12):
        super().__init__()
        self.pixel, self.side = pixel, side
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        v = x.reshape(x.shape[0], -1)[:, self.pixel]
        return torch.stack([10 * v, torch.zeros_like(v)], 1) + 0 * self.dummy


def test_rise_peaks_at_the_only_pixel_that_matters():
    side, pixel = 12, 5 * 12 + 7
    model = OnePixel(pixel, side)
    x = torch.ones(1, 1, side, side)
    sal = RISE(model, output="logits").attribute(x, target=0, n_masks=4000, grid_size=4, p_keep=0.5)
    assert sal.shape == x.shape
    assert int(sal.reshape(-1).argmax()) == pixel
    # Monte-Carlo identity: with logit 10 * m_k(pixel), saliency_j = 10 * E[m(pixel) m(j)] / p
    masks = rise_masks(4000, 4, 0.5, side, side, 0, "cpu").reshape(4000, -1)
    expected = 10 * (masks[:, pixel : pixel + 1] * masks).sum(0) / (4000 * 0.5)
    torch.testing.assert_close(sal.reshape(-1), expected, rtol=1e-5, atol=1e-5)


def test_rise_batched_equals_per_image_loop():
    model = random_trained_mlp((64, 9, 3), seed=12, dtype=torch.float32)
    x = torch.rand(3, 1, 8, 8)
    target = torch.tensor([0, 2, 1])
    batched = RISE(model).attribute(x, target=target, n_masks=300, grid_size=3, batch_rows=128)
    masks = rise_masks(300, 3, 0.5, 8, 8, 0, "cpu")
    for b in range(3):
        with torch.no_grad():
            p = torch.softmax(model(x[b : b + 1] * masks[:, None]), 1)[:, target[b]]  # (N,)
        expected = (p[:, None, None] * masks).sum(0) / (300 * 0.5)
        torch.testing.assert_close(batched[b, 0], expected, rtol=1e-5, atol=1e-6)


def test_rise_masks_follow_the_recipe():
    m = rise_masks(500, 7, 0.3, 28, 28, 1, "cpu")
    assert m.shape == (500, 28, 28)
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert abs(float(m.mean()) - 0.3) < 0.03
    assert np.unique(m.numpy().round(3)).size > 10  # upsampled, not binary

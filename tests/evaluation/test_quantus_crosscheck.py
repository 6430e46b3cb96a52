"""Cross-check against Quantus 0.6.0 (test-only dependency; skipped when it is not installed).

Quantus 0.6.0 calls ``np.trapz``, which NumPy 2.4 removed: the test aliases it to
``np.trapezoid`` for its own duration (our code never calls Quantus).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xwp.evaluation import faithfulness as F

quantus = pytest.importorskip("quantus")


@pytest.fixture(autouse=True)
def trapz_alias(monkeypatch):
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


@pytest.fixture(scope="module")
def batch(trained, typeface):
    data = typeface[1].sample(4, seed=5)
    attr = torch.randn(data.images.shape, generator=torch.Generator().manual_seed(3))  # no ties
    return trained, data.images, data.labels, attr


def test_pixel_flipping_curves_agree_with_ours(batch):
    model, x, y, attr = batch
    metric = quantus.PixelFlipping(
        features_in_step=1, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )
    theirs = np.array(
        metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            a_batch=attr.numpy(),
            device="cpu",
            softmax=True,
            channel_first=True,
        )
    )  # (B, 784): probability after removing 1..784 features
    ours = F.curves(model, x, y, attr, "deletion", "morf", steps=784)  # (B, 785): 0..784 removed
    assert theirs.shape == (4, 784) and np.ptp(theirs) > 0.5  # the curves do fall
    np.testing.assert_allclose(ours[:, 1:].numpy(), theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("softmax", [False, True])
def test_faithfulness_correlation_agrees_on_quantus_subsets(batch, softmax):
    model, x, y, attr = batch
    seen = []

    def recording(arr, indices, **kwargs):
        seen.append(np.array(indices))
        return quantus.functions.perturb_func.batch_baseline_replacement_by_indices(arr=arr, indices=indices, **kwargs)

    np.random.seed(0)  # Quantus draws its subsets from the global generator
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=20,
        subset_size=100,
        perturb_baseline=0.0,
        perturb_func=recording,
        return_aggregate=False,
        disable_warnings=True,
    )
    theirs = np.array(
        metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            a_batch=attr.numpy(),
            device="cpu",
            softmax=softmax,
            channel_first=True,
        )
    )
    subsets = torch.from_numpy(np.stack(seen, axis=1))  # (B, runs, 100)
    assert subsets.shape == (4, 20, 100) and np.all(np.isfinite(theirs))
    ours = F.faithfulness_correlation(model, x, y, attr, output="softmax" if softmax else "logits", subsets=subsets)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-5)

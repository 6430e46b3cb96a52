"""The Captum-backed baselines (xwp/attribution/captum.py) against direct Captum calls."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_trained_mlp

import xwp
from xwp.attribution import make_method, superpixel_mask


def _softmax_model(model):
    return lambda x: torch.softmax(model(x), 1)


def test_captum_methods_equal_direct_captum_calls(trained, typeface):
    from captum.attr import (
        LRP,
        DeepLift,
        GradientShap,
        IntegratedGradients,
        KernelShap,
        Occlusion,
        Saliency,
        ShapleyValueSampling,
    )

    x = typeface[1].images[:4]
    y = typeface[1].labels[:4]
    soft = _softmax_model(trained)
    ours = {n: make_method(n, trained) for n in ("occlusion", "ig", "saliency", "deeplift", "lrp")}
    model64 = copy.deepcopy(trained).double()  # our Occlusion computes in float64 (see the next test)
    torch.testing.assert_close(
        ours["occlusion"].attribute(x, target=y),
        Occlusion(_softmax_model(model64))
        .attribute(
            x.double(),
            target=y,
            sliding_window_shapes=(1, 1, 1),
            strides=(1, 1, 1),
            baselines=0.0,
            perturbations_per_eval=64,
        )
        .float(),
    )
    direct32 = Occlusion(soft).attribute(x, target=y, sliding_window_shapes=(1, 1, 1), baselines=0.0)
    torch.testing.assert_close(make_method("occlusion", trained, dtype=None).attribute(x, target=y), direct32)
    torch.testing.assert_close(
        ours["ig"].attribute(x, target=y),
        IntegratedGradients(soft).attribute(x, target=y, n_steps=50, baselines=0.0, internal_batch_size=4096),
    )
    torch.testing.assert_close(ours["saliency"].attribute(x, target=y), Saliency(soft).attribute(x, target=y, abs=True))
    copy1 = copy.deepcopy(trained)
    torch.testing.assert_close(
        ours["deeplift"].attribute(x, target=y), DeepLift(copy1).attribute(x, target=y, baselines=0.0)
    )
    copy2 = copy.deepcopy(trained)
    torch.testing.assert_close(ours["lrp"].attribute(x, target=y), LRP(copy2).attribute(x, target=y))

    torch.manual_seed(0)
    direct = ShapleyValueSampling(soft).attribute(x, target=y, n_samples=3, baselines=0.0, perturbations_per_eval=64)
    torch.testing.assert_close(make_method("shapley", trained, n_samples=3).attribute(x, target=y), direct)
    torch.manual_seed(0)
    mask = superpixel_mask(x, 2)
    direct = KernelShap(soft).attribute(
        x[:1], target=y[:1], n_samples=60, baselines=0.0, feature_mask=mask, perturbations_per_eval=60
    )
    ours_ks = make_method("kernelshap", trained, n_samples=60, perturbations_per_eval=60).attribute(x[:1], target=y[:1])
    torch.testing.assert_close(ours_ks, direct)
    torch.manual_seed(0)
    np.random.seed(0)
    direct = GradientShap(soft).attribute(x, target=y, baselines=torch.zeros(1, 1, 28, 28), n_samples=50, stdevs=0.1)
    torch.testing.assert_close(make_method("gradientshap", trained).attribute(x, target=y), direct)


def test_lrp_can_be_called_twice_with_custom_epsilon(trained, typeface):
    """Captum drops custom rules after each call; ours are set again every time."""
    x, y = typeface[1].images[:2], typeface[1].labels[:2]
    lrp = make_method("lrp", trained, epsilon=0.5)
    first = lrp.attribute(x, target=y)
    second = lrp.attribute(x, target=y)
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, make_method("lrp", trained).attribute(x, target=y))


def test_occlusion_in_float64_keeps_confident_predictions_resolved():
    """In float32 the occlusion effects of a confident prediction collapse to multiples of 6e-8."""
    model64 = random_trained_mlp((40, 16, 8, 5), seed=21)
    with torch.no_grad():
        model64.linears[-1].weight.mul_(25.0)
    x = torch.rand(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = model64(x).argmax(1)
    from captum.attr import Occlusion

    exact = Occlusion(_softmax_model(model64)).attribute(x, target=target, sliding_window_shapes=(1,), baselines=0.0)
    model32 = copy.deepcopy(model64).float()
    ours = make_method("occlusion", model32).attribute(x.float(), target=target).double()
    plain32 = make_method("occlusion", model32, dtype=None).attribute(x.float(), target=target).double()
    scale = float(exact.abs().max())
    assert float((ours - exact).abs().max()) < 1e-3 * scale
    assert float((plain32 - exact).abs().max()) > 0.1 * scale
    with pytest.raises(xwp.XWPError, match="dtype"):
        make_method("occlusion", model32, dtype="float16").attribute(x.float(), target=target)

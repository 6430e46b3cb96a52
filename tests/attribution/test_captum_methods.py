"""The Captum-backed baselines (xwp/attribution/captum.py) against direct Captum calls."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import xwp
from tests.support import random_trained_mlp
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


def test_sparse_occlusion_equals_captum_in_float64():
    """1-pixel windows on a zero baseline skip the zero pixels: same maps as Captum (float64 rounding)."""
    from captum.attr import Occlusion

    model64 = random_trained_mlp((49, 12, 6), seed=5).double()
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(5, 1, 7, 7, dtype=torch.float64, generator=gen)
    x[x < 0.6] = 0.0  # mostly black, like a drawing
    x[4] = torch.rand(1, 7, 7, dtype=torch.float64, generator=gen) + 0.1  # no zero at all
    target = torch.tensor([0, 1, 2, 3, 4])
    method = make_method("occlusion", model64)
    method.rows_per_pass = 7  # several passes, split across images
    ours = method.attribute(x, target=target)

    def reference(target):  # one pixel at a time, in float64: obviously correct and slow
        soft = _softmax_model(model64)
        out = torch.zeros_like(x)
        with torch.no_grad():
            for b in range(len(x)):
                full = soft(x[b : b + 1])[0, target[b]]
                for p in range(49):
                    occluded = x[b : b + 1].clone().reshape(1, -1)
                    occluded[0, p] = 0.0
                    out[b].view(-1)[p] = full - soft(occluded.reshape(1, 1, 7, 7))[0, target[b]]
        return out

    torch.testing.assert_close(ours, reference(target), rtol=0, atol=1e-13)
    assert torch.equal(ours[x == 0], torch.zeros_like(ours[x == 0]))
    captum = Occlusion(_softmax_model(model64)).attribute(
        x, target=target, sliding_window_shapes=(1, 1, 1), strides=(1, 1, 1), baselines=0.0
    )
    torch.testing.assert_close(ours, captum.double(), rtol=0, atol=1e-6)  # Captum returns float32 here
    predicted = make_method("occlusion", model64).attribute(x)  # target None: the predicted class
    torch.testing.assert_close(predicted, reference(model64(x).argmax(1)), rtol=0, atol=1e-13)
    window2 = make_method("occlusion", model64, window=2, stride=1).attribute(x, target=target)  # through Captum
    exact2 = Occlusion(_softmax_model(model64)).attribute(
        x, target=target, sliding_window_shapes=(1, 2, 2), strides=(1, 1, 1), baselines=0.0, perturbations_per_eval=64
    )
    torch.testing.assert_close(window2, exact2.double())

"""Activation-deactivation: the MLP identity with zero occlusion, ConvAD's properties, the attribution."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xwp.attribution import make_method
from xwp.attribution.deactivation import ActivationDeactivation, deactivate
from xwp.errors import XWPError
from xwp.models import MLP

torch.set_num_threads(1)


def switched_off(model: MLP, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Literal AD on an MLP: a copy whose first-layer weight columns of removed inputs are zero."""
    outs = []
    for b in range(x.shape[0]):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.linears[0].weight[:, keep[b].reshape(-1) == 0] = 0.0
        outs.append(m(x[b : b + 1]))
    return torch.cat(outs)


def tiny_cnn(bias: bool = True, seed: int = 0) -> nn.Sequential:
    """2 convs + max-pool ReLU CNN on 1x12x12 inputs, float64."""
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(144, 5, bias=bias),
        )
        .double()
        .eval()
    )


def test_mlp_deactivation_is_zero_occlusion():
    model = MLP((784, 40, 20, 10), seed=0).double().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64, generator=gen)
    keep = (torch.rand(4, 1, 28, 28, generator=gen) > 0.4).double()
    ad = deactivate(model, x, keep)
    literal = switched_off(model, x, keep)
    occluded = model(keep * x)
    assert torch.allclose(ad, literal, atol=1e-12, rtol=0)
    assert torch.allclose(ad, occluded, atol=1e-12, rtol=0)
    assert torch.equal(deactivate(model, x, None), model(x).detach())


def test_convad_unchanged_without_removal_and_zero_occlusion_without_bias():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64, generator=gen)
    keep = torch.ones(3, 1, 12, 12, dtype=torch.float64)
    keep[:, :, 2:9, 3:10] = 0  # a 7x7 block removed
    with_bias, no_bias = tiny_cnn(True), tiny_cnn(False)
    assert torch.allclose(deactivate(with_bias, x, torch.ones_like(x)), with_bias(x), atol=1e-14)
    assert torch.allclose(deactivate(no_bias, x, keep), no_bias(keep * x), atol=1e-12)
    # with biases, ConvAD also switches off units whose whole receptive field is removed
    assert not torch.allclose(deactivate(with_bias, x, keep), with_bias(keep * x), atol=1e-6)


def test_convad_any_visible_rule_by_hand():
    """One conv (3x3, padding 1): an output unit stays on iff any input of its window is kept."""
    conv = nn.Conv2d(1, 1, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(1.0)  # every unit outputs 1 unless switched off
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten()).eval()
    keep = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    keep[0, 0, 0, 0] = 1.0
    out = deactivate(model, torch.ones(1, 1, 6, 6, dtype=torch.float64), keep).reshape(6, 6)
    want = torch.zeros(6, 6, dtype=torch.float64)
    want[:2, :2] = 1.0
    assert torch.equal(out, want)


@pytest.mark.parametrize("window,stride", [(1, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("shape", [(2, 1, 14, 14), (2, 196)])
def test_ad_attribution_equals_zero_occlusion_on_mlp(window, stride, shape):
    model = MLP((196, 30, 10), seed=2).eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    ad = ActivationDeactivation(model, window=window, stride=stride).attribute(x, target=torch.tensor([1, 7]))
    occ = make_method("occlusion", model, window=window, stride=stride).attribute(x, target=torch.tensor([1, 7]))
    assert ad.shape == x.shape and ad.dtype == x.dtype
    assert torch.allclose(ad, occ, atol=1e-7)


def test_ad_attribution_on_cnn_literal_loop():
    model = tiny_cnn(True)
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got = ActivationDeactivation(model, window=3, stride=3, output="logits").attribute(x, target=2)
    base = model(x)[0, 2]
    want = torch.zeros(12, 12, dtype=torch.float64)
    for i in range(0, 12, 3):
        for j in range(0, 12, 3):
            keep = torch.ones_like(x)
            keep[..., i : i + 3, j : j + 3] = 0
            want[i : i + 3, j : j + 3] = base - deactivate(model, x, keep)[0, 2]
    assert torch.allclose(got[0, 0], want, atol=1e-12)


def test_model_unchanged_and_errors():
    model = tiny_cnn(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ActivationDeactivation(model, window=2, stride=2).attribute(torch.rand(2, 1, 12, 12, dtype=torch.float64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(XWPError, match="0 \\(removed\\) and 1"):
        deactivate(model, torch.rand(1, 1, 12, 12), torch.full((1, 1, 12, 12), 0.5))
    with pytest.raises(XWPError, match="does not fit"):
        deactivate(model, torch.rand(1, 1, 12, 12), torch.ones(5))
    with pytest.raises(XWPError, match="stride"):
        ActivationDeactivation(model, window=2, stride=3)
    with pytest.raises(XWPError, match="first layer"):
        deactivate(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), torch.rand(1, 4), torch.ones(1, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = tiny_cnn(True)
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    keep = (torch.rand(2, 1, 12, 12) > 0.5).double()
    cpu = deactivate(model, x, keep)
    gpu = deactivate(copy.deepcopy(model).cuda(), x.cuda(), keep.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-10)


def test_problem_says_why_for_the_app():
    problem = ActivationDeactivation.problem
    assert problem(MLP((12, 5), seed=0), torch.rand(1, 12)) is None  # no ReLU needed
    assert problem(MLP((12, 5), seed=0)) is None
    assert problem(tiny_cnn(), torch.rand(1, 1, 12, 12, dtype=torch.float64)) is None
    for inputs in (torch.rand(1, 4), None):
        msg = problem(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), inputs)
        assert msg.startswith("Activation-deactivation does not apply") and "first layer" in msg


def test_registered_with_per_call_options():
    model = tiny_cnn(True)
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    method = make_method("ad-occlusion", model)
    assert isinstance(method, ActivationDeactivation)
    once = method.attribute(x, target=2, window=3, stride=3, output="logits")
    assert torch.equal(once, ActivationDeactivation(model, window=3, stride=3, output="logits").attribute(x, target=2))
    assert torch.equal(method.attribute(x, target=2), ActivationDeactivation(model).attribute(x, target=2))
    with pytest.raises(XWPError, match="stride"):
        method.attribute(x, stride=4)

"""Zennit LRP composites against a hand-written LRP reference (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xwp.attribution import make_method
from xwp.attribution.zennit_lrp import EpsilonPlusFlatLRP, GammaBoxLRP, ZennitLRP
from xwp.errors import XWPError
from xwp.models import MLP

torch.set_num_threads(1)


def stab(z, eps):
    """Zennit's stabiliser: ``z + eps * sign(z)`` with sign(0) = +1."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def reference_lrp(model: MLP, x, target, first: str, eps=1e-6, low=0.0, high=1.0):
    """LRP by hand on an MLP: epsilon on dense layers above the first; flat or z^B on the first."""
    linears = model.linears
    a = [x.reshape(x.shape[0], -1)]
    for lin in linears[:-1]:
        a.append(torch.relu(lin(a[-1])))
    logits = linears[-1](a[-1])
    rel = torch.zeros_like(logits)
    rows = torch.arange(x.shape[0])
    rel[rows, target] = logits[rows, target]
    for k in range(len(linears) - 1, 0, -1):  # epsilon rule, bias in the denominator
        w, b = linears[k].weight, linears[k].bias
        z = a[k] @ w.T + b
        rel = a[k] * ((rel / stab(z, eps)) @ w)
    w, b = linears[0].weight, linears[0].bias
    if first == "flat":
        n_in = w.shape[1]
        return (rel / stab(torch.full_like(rel, float(n_in)), eps)).sum(1, keepdim=True).expand_as(a[0])
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    xin = a[0]
    z = xin @ w.T - low * wp.sum(1) - high * wn.sum(1)  # (B, H); the bias cancels in z^B
    s = rel / stab(z, eps)
    return xin * (s @ w) - low * (s @ wp) - high * (s @ wn)


def lrp(model: nn.Module, composite: str = "epsilon-plus-flat", **options) -> ZennitLRP:
    """The registered Zennit method ``lrp-<composite>`` for ``model``."""
    return make_method(f"lrp-{composite}", model, **options)


def no_hooks(model: nn.Module) -> bool:
    """Whether no module of ``model`` carries a hook."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return all(not getattr(m, k, {}) for m in model.modules() for k in kinds)


@pytest.mark.parametrize("composite,first", [("epsilon-plus-flat", "flat"), ("gamma-box", "box")])
def test_matches_hand_written_lrp_on_mlp(composite, first):
    model = MLP((20, 12, 8, 5), seed=1).double().eval()
    x = torch.rand(6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    got = lrp(model, composite).attribute(x, target=target)
    want = reference_lrp(model, x, target, first)
    assert got.shape == x.shape
    assert torch.allclose(got, want, atol=1e-12, rtol=1e-9)
    # the first-layer rule matters: flat and z^B give different maps
    other = reference_lrp(model, x, target, "box" if first == "flat" else "flat")
    assert not torch.allclose(got, other, atol=1e-6)


def test_epsilon_plus_flat_gives_a_constant_map_on_an_mlp():
    # the flat rule spreads relevance over a dense first layer's whole field: no pixel ranking
    model = MLP((16, 8, 3), seed=0).double()
    x = torch.rand(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    maps = lrp(model).attribute(x, target=torch.tensor([0, 1, 2]))
    assert torch.allclose(maps, maps[:, :1].expand_as(maps), rtol=1e-12, atol=0) and maps.abs().sum() > 0


def test_image_shaped_inputs_and_predicted_class():
    model = MLP((784, 30, 10), seed=2).double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    got = lrp(model, "gamma-box").attribute(x)
    want = reference_lrp(model, x, model(x).argmax(1), "box").reshape(x.shape)
    assert got.shape == x.shape and torch.allclose(got, want, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "gamma-box"])
def test_model_unchanged_and_no_hooks_left(composite):
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 4)
    ).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = lrp(model, composite)
    for _ in range(2):
        r = method.attribute(torch.rand(2, 1, 8, 8, dtype=torch.float64), target=1)
        assert r.shape == (2, 1, 8, 8) and torch.isfinite(r).all()
    assert no_hooks(model) and no_hooks(method.model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "gamma-box"])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_conservation_on_bias_free_networks(composite, net):
    """Without biases every rule used here conserves relevance: sum R(x) = f_c(x) up to the stabilisers."""
    torch.manual_seed(3)
    if net == "mlp":
        model = nn.Sequential(nn.Linear(16, 10, bias=False), nn.ReLU(), nn.Linear(10, 4, bias=False))
        x = torch.rand(5, 16, dtype=torch.float64)
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16, 4, bias=False),
        )
        x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    model = model.double().eval()
    logits = model(x)
    t = logits.argmax(1)
    r = lrp(model, composite, epsilon=1e-12, stabilizer=1e-12).attribute(x, target=t)
    f_c = logits.gather(1, t[:, None])[:, 0].detach()
    assert torch.allclose(r.reshape(5, -1).sum(1), f_c, rtol=1e-8, atol=1e-10)


def test_float32_and_errors():
    model = MLP((784, 30, 10), seed=0).eval()
    r = lrp(model).attribute(torch.rand(2, 784))
    assert r.dtype == torch.float32 and r.shape == (2, 784)
    with pytest.raises(XWPError, match="unknown method"):
        lrp(model, "alpha-beta")
    with pytest.raises(XWPError, match="Tanh"):
        lrp(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)))
    with pytest.raises(XWPError, match="out of range"):
        lrp(model).attribute(torch.rand(2, 784), target=12)
    with pytest.raises(XWPError, match="low must be below high"):
        lrp(model, "gamma-box", low=1.0, high=0.0)
    with pytest.raises(XWPError, match="no option"):
        lrp(model, "epsilon-plus-flat", gamma=0.5)  # gamma belongs to the gamma-box composite


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = MLP((50, 20, 5), seed=0).double().eval()
    x = torch.rand(3, 50, dtype=torch.float64)
    for composite in ("epsilon-plus-flat", "gamma-box"):
        cpu = lrp(model, composite).attribute(x)
        gpu = ZennitLRP(model.cuda(), composite).attribute(x.cuda())
        model.cpu()
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-10)


def test_problem_says_why_for_the_app():
    tanh = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    for cls in (EpsilonPlusFlatLRP, GammaBoxLRP):
        assert cls.problem(MLP((12, 5), seed=0)) is None
        assert cls.problem(tanh).startswith("Zennit LRP does not apply") and "Tanh" in cls.problem(tanh)


def test_per_call_options_override_the_bound_ones():
    model = MLP((20, 12, 5), seed=4).double().eval()
    x = torch.rand(3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    method = lrp(model, "gamma-box")
    wide = method.attribute(x, target=1, low=-1.0)
    assert torch.allclose(wide, lrp(model, "gamma-box", low=-1.0).attribute(x, target=1), atol=1e-14)
    assert not torch.allclose(wide, method.attribute(x, target=1), atol=1e-6)

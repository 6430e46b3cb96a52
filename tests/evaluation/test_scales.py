"""Score spaces: log-odds against float64 references, XWP/XWPc/Captum in log-odds, the invisibility check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xwp import MLP, XWP, XWPc
from xwp.attribution import make_method
from xwp.errors import XWPError
from xwp.evaluation.scales import (
    MEANING,
    SPACES,
    caption,
    invisibility_warning,
    invisible_maps,
    log_odds,
    method_options,
    output_for,
    shared_limit,
    target_score,
    xwp_log_odds,
)


def ref_log_odds(z: torch.Tensor, t: int) -> float:
    """Obviously correct log-odds of class t in float64: log p_t - log sum_{n != t} p_n."""
    z = z.detach().double().reshape(-1)
    lse = torch.logsumexp(z, 0)
    others = torch.logsumexp(torch.cat([z[:t], z[t + 1 :]]), 0)
    return float((z[t] - lse) - (others - lse))


def confident_model(seed: int = 0, sizes=(784, 32, 10)) -> MLP:
    """A random MLP moved away from its initial state, with a large last layer: p_top near 1."""
    model = MLP(sizes, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        model.linears[-1].weight.mul_(200.0)
    return model.eval()


def test_log_odds_matches_reference_even_when_p_rounds_to_one():
    z = torch.tensor([[30.0, 0.0, -5.0], [1.0, 1.0, 0.0], [0.0, 2.0, -40.0], [100.0, -100.0, 0.0]])
    assert torch.softmax(z, 1)[0, 0] == 1.0  # float32 cannot tell p from 1 here
    lo = log_odds(z)
    for i in range(len(z)):
        for t in range(3):
            assert lo[i, t].item() == pytest.approx(ref_log_odds(z[i], t), rel=1e-6, abs=1e-5)
    assert torch.isfinite(lo).all()
    with pytest.raises(XWPError):
        log_odds(torch.zeros(2, 1))


def test_log_odds_gradients_are_finite_for_saturated_predictions():
    z = torch.tensor([[80.0, 0.0, -3.0]], requires_grad=True)
    log_odds(z)[0, 0].backward()
    assert torch.isfinite(z.grad).all()
    # d/dz_0 of log p_0 - log(1 - p_0) is 1 when the other classes are negligible
    assert z.grad[0, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_xwp_encoding_gives_the_target_log_odds_under_the_indicator():
    gen = torch.Generator().manual_seed(0)
    for c in (2, 3, 10):
        z = torch.randn(5, c, generator=gen, dtype=torch.float64) * 8
        out = xwp_log_odds(z)
        for t in range(c):
            ind = -torch.ones(c, dtype=torch.float64)
            ind[t] = 1
            got = (out * ind).sum(1)
            want = torch.tensor([ref_log_odds(z[i], t) for i in range(5)], dtype=torch.float64)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def slow_xwp(model: MLP, x: torch.Tensor, t: int, complementary: bool) -> np.ndarray:
    """XWP / XWPc in log-odds space by swapping one column at a time, in float64."""
    m = model.double()
    w = m.linears[0].weight.detach().clone()
    w0 = m.initial_state()["0.weight"].double()
    b = m.linears[0].bias.detach()
    xs = x.double().reshape(-1)

    def score(weight):
        h = weight @ xs + b
        for layer in m.linears[1:]:
            h = layer(h.relu())
        return ref_log_odds(h, t)

    base = score(w0 if complementary else w)
    out = np.zeros(xs.numel())
    for i in torch.nonzero(xs).flatten().tolist():
        swapped = (w0 if complementary else w).clone()
        swapped[:, i] = w[:, i] if complementary else w0[:, i]
        out[i] = score(swapped) - base if complementary else base - score(swapped)
    model.float()
    return out


@pytest.mark.parametrize("cls", [XWP, XWPc])
def test_xwp_in_log_odds_matches_a_slow_float64_reference(cls):
    model = confident_model()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 784, generator=gen) * (torch.rand(1, 784, generator=gen) < 0.3)
    with torch.no_grad():
        z = model(x)
    t = int(z.argmax())
    p = torch.softmax(z.double(), 1)[0, t].item()
    assert p > 1 - 1e-4  # confident: softmax differences are tiny here
    ref = slow_xwp(model, x, t, complementary=cls is XWPc)
    got = cls(model, output=output_for("log-odds", cls.__name__.lower())).attribute(x, target=t)[0].numpy()
    scale = np.abs(ref).max()
    assert scale > 1e-3
    np.testing.assert_allclose(got, ref, atol=5e-5 * scale, rtol=0)  # measured: 4.3e-6 (XWP), 1.2e-6 (XWPc)
    # in float64 the fast path agrees to rounding
    got64 = cls(model.double(), output=xwp_log_odds).attribute(x.double(), target=t)[0].numpy()
    model.float()
    np.testing.assert_allclose(got64, ref, atol=1e-9 * scale, rtol=0)
    if cls is XWP:  # the probability map of the confident model is tiny: the reason for log-odds
        prob = cls(model, output="softmax").attribute(x, target=t)[0].numpy()
        assert np.abs(prob).max() < 1e-4 * scale  # measured: 1.3e-6


def test_captum_occlusion_in_log_odds_matches_reference():
    model = confident_model(seed=1)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(1, 784, generator=gen) * (torch.rand(1, 784, generator=gen) < 0.1)
    t = int(model(x).argmax())
    method = make_method("occlusion", model, **method_options("log-odds", "occlusion"))
    got = method.attribute(x, target=t)[0].numpy()
    with torch.no_grad():
        base = ref_log_odds(model.double()(x.double()), t)
        want = np.zeros(784)
        for i in torch.nonzero(x[0]).flatten().tolist():
            xi = x.double().clone()
            xi[0, i] = 0
            want[i] = base - ref_log_odds(model(xi), t)
    model.float()
    np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max(), rtol=0)  # float64 inside, float32 out


def test_gradient_methods_accept_the_log_odds_output():
    model = confident_model(seed=2)
    x = torch.rand(2, 784)
    for name in ("ig", "saliency", "gradientshap", "rise"):
        a = make_method(name, model, **method_options("log-odds", name)).attribute(x, target=[0, 1])
        assert a.shape == x.shape and torch.isfinite(a).all()
    assert method_options("log-odds", "lrp") == {} and method_options("log-odds", "random") == {}
    assert output_for("probability", "xwp") == "softmax" and output_for("logits", "ig") == "logits"
    with pytest.raises(XWPError):
        output_for("odds", "xwp")


def test_target_score_per_space():
    z = torch.tensor([[3.0, 1.0, 0.0]])
    assert target_score(z, 0, "logits").item() == 3.0
    assert target_score(z, 0, "probability").item() == pytest.approx(torch.softmax(z, 1)[0, 0].item())
    assert target_score(z, 0, "log-odds").item() == pytest.approx(ref_log_odds(z[0], 0), rel=1e-6)


def test_invisible_maps_on_constructed_maps():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 1.0, (28, 28))
    small = big * 1e-4  # the "±2.3e-05" map of a confident prediction
    zero = np.zeros((28, 28))
    spiky = np.zeros((28, 28))
    spiky[0, 0] = 100.0  # one outlier pixel must not set the scale for its own map
    border = big * 0.03  # 3 % of the big map: visible
    maps = {"big": big, "small": small, "zero": zero, "border": border}
    limit = shared_limit(maps)
    assert limit == pytest.approx(np.percentile(np.abs(big), 99.5))
    assert invisible_maps(maps, limit) == ["small", "zero"]
    assert invisible_maps({"spiky": spiky, "big": big}, limit) == ["spiky"]  # 99.5th percentile of |spiky| is 0
    assert invisible_maps(maps, 0.0) == [] and invisible_maps(maps, float("nan")) == []
    warning = invisibility_warning(maps, limit, {"small": "XWP", "zero": "Occlusion"})
    assert "XWP, Occlusion" in warning
    assert invisibility_warning({"big": big, "border": border}, limit) is None


def test_every_space_has_a_plain_sentence():
    assert set(MEANING) == set(SPACES)
    for s in SPACES:
        assert len(MEANING[s]) < 300 and "+" in MEANING[s]
    assert "twice" in caption("probability", ["xwp", "ig"]) and "twice" not in caption("probability", ["ig"])
    assert "LRP" in caption("log-odds", ["lrp"])

"""The oracle itself: xwp.attribution.reference against loops written here independently, and its contract.

Every fast path is tested against :mod:`xwp.attribution.reference`; this file checks that
reference against two more hand-written loops (a dense column swap in a deep copy, and the
two convolutions per pixel) so that the oracle does not only agree with itself.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xwp
from tests.support import random_trained_mlp
from xwp.attribution.reference import evidence, xwp_reference, xwpc_reference
from xwp.errors import XWPError


def indicator(target, n_classes):
    ind = -torch.ones(len(target), n_classes, dtype=torch.float64)
    ind[torch.arange(len(target)), target] = 1.0
    return ind


def score(model, x, target, output):
    logits = model(x)
    out = torch.softmax(logits, 1) if output == "softmax" else logits
    return (out * indicator(target, logits.shape[1])).sum(1)


def reference_xwp(model, model0, x, target, output="softmax"):
    """Loop over features; for each, copy the model and really put W_i back to W_i^0."""
    attr = torch.zeros_like(x)
    with torch.no_grad():
        ref = score(model, x, target, output)
        for i in range(x.shape[1]):
            swapped = copy.deepcopy(model)
            swapped.linears[0].weight[:, i] = model0.linears[0].weight[:, i]
            attr[:, i] = ref - score(swapped, x, target, output)
    return attr


def reference_xwpc(model, model0, x, target, output="softmax", literal=False):
    """Loop over features: first layer all-initial, then give feature i its trained weights back."""
    attr = torch.zeros_like(x)
    with torch.no_grad():
        base_model = copy.deepcopy(model)
        base_model.linears[0].weight.copy_(model0.linears[0].weight)
        base = score(base_model, x, target, output)
        full = score(model, x, target, output)
        for i in range(x.shape[1]):
            only_i = copy.deepcopy(base_model)
            only_i.linears[0].weight[:, i] = model.linears[0].weight[:, i]
            if literal:  # eq. 5 as printed: f(x) - f^{W_i' = W_i'^0}(x), i.e. all but i initial
                attr[:, i] = full - score(only_i, x, target, output)
            else:
                attr[:, i] = score(only_i, x, target, output) - base
    return attr



def conv_score(logits, target, output):
    out = torch.softmax(logits, 1) if output == "softmax" else logits
    return (out * indicator(target, logits.shape[1])).sum(1)


def conv_loop(conv, conv0, rest, x, target, output, complement):
    """Literally conv_A(x ⊙ (1 − e_i)) + conv_B(x ⊙ e_i) + b per input element i, then the rest of the network."""
    w, w0, b = conv.weight, conv0.weight, conv.bias

    def first(inp, weight, bias=None):
        return F.conv2d(inp, weight, bias, conv.stride, conv.padding, conv.dilation)

    keep, swap = (w0, w) if complement else (w, w0)  # XWPc: all initial but pixel i; XWP: all trained but pixel i
    with torch.no_grad():
        base = conv_score(rest(first(x, keep, b)), target, output)
        attr = torch.zeros_like(x).reshape(x.shape[0], -1)
        for i in range(attr.shape[1]):
            e = torch.zeros(attr.shape[1], dtype=x.dtype)
            e[i] = 1.0
            e = e.reshape(x.shape[1:])
            h = first(x * (1 - e), keep, b) + first(x * e, swap)
            pert = conv_score(rest(h), target, output)
            attr[:, i] = pert - base if complement else base - pert
    return attr.reshape(x.shape)




@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_dense_reference_equals_a_column_swap_in_a_deep_copy(output):
    model = random_trained_mlp((14, 6, 5, 4), seed=3)
    model0 = model.initial_model()
    x = torch.rand(4, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[x < 0.3] = 0.0
    x[:, 2] = 0.0  # a feature that is 0 in every image: skipped by the oracle, still exactly 0
    t = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(xwp_reference(model, x, t, model0, output), reference_xwp(model, model0, x, t, output),
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    torch.testing.assert_close(xwpc_reference(model, x, t, model0, output), reference_xwpc(model, model0, x, t, output),
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    lit = xwpc_reference(model, x, t, model0, output, rule="eq5-literal")
    torch.testing.assert_close(lit, reference_xwpc(model, model0, x, t, output, literal=True), rtol=1e-12, atol=1e-14)
    assert (xwp_reference(model, x, t, model0, output)[:, 2] == 0).all()
    assert (lit[:, 2] != 0).all()  # the printed eq. 5 gives C(x) to a feature that is not there


@pytest.mark.parametrize("complement", [False, True])
def test_conv_reference_equals_two_convolutions_per_pixel(complement):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    model0 = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double().eval()
    model = copy.deepcopy(model0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.4 * torch.randn_like(p))
    x = torch.rand(2, 2, 7, 7, dtype=torch.float64)
    x[x < 0.35] = 0.0
    t = torch.tensor([1, 4])
    ref = xwpc_reference if complement else xwp_reference
    want = conv_loop(model[0], model0[0], model[1:], x, t, "softmax", complement)
    torch.testing.assert_close(ref(model, x, t, model0), want, rtol=1e-12, atol=1e-14)


def test_the_reference_never_changes_the_model_and_takes_the_predicted_class():
    model = random_trained_mlp((10, 5, 3), seed=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 10, dtype=torch.float64)
    got = xwp_reference(model, x)
    want = xwp_reference(model, x, model(x).argmax(1))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and not model.training


def test_evidence_is_eq_4():
    logits = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    p = torch.softmax(logits, 1)[0]
    t = torch.tensor([1])
    assert torch.isclose(evidence(logits, t)[0], p[1] - p[0] - p[2])
    assert torch.isclose(evidence(logits, t, "logits")[0], torch.tensor(2.0 - 1.0 - 0.5, dtype=torch.float64))
    with pytest.raises(XWPError, match="output"):
        evidence(logits, t, "probabilities")


def test_xwp_takes_per_call_overrides_like_every_method():
    model = random_trained_mlp((12, 6, 4), seed=6)
    x = torch.rand(2, 12, dtype=torch.float64)
    method = xwp.XWP(model)
    torch.testing.assert_close(method.attribute(x, 1, output="logits"), xwp.XWP(model, output="logits").attribute(x, 1))
    assert method.output == "softmax"  # the override was for that call only
    lit = xwp.XWPc(model).attribute(x, 1, rule="eq5-literal")
    torch.testing.assert_close(lit, xwp.XWPc(model, rule="eq5-literal").attribute(x, 1))
    with pytest.raises(XWPError, match="no option"):
        method.attribute(x, 1, outptu="logits")
    with pytest.raises(XWPError, match="rule"):
        xwp.XWPc(model).attribute(x, 1, rule="backwards")

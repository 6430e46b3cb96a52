"""Pathwise explanation: fast forms against a literal, loop-based copy of the official algorithm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xwp.attribution import make_method
from xwp.attribution.pathwise import Pathwise, width_count
from xwp.attribution.unroll import unroll
from xwp.errors import XWPError
from xwp.models import MLP

torch.set_num_threads(1)


def literal_pathwise(model, x, target, width=None, depth=None, active_only=False, threshold="1/C"):
    """The official code's algorithm, one image and one unit at a time (slow, obviously correct)."""
    layers = unroll(model, x[:1])
    relus = [k for k, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    chosen = relus if depth is None else relus[len(relus) - depth :]
    out = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        acts, h = {}, xb
        for k, layer in enumerate(layers):
            h = layer(h)
            if k in relus:
                acts[k] = h.detach()
        n_classes = h.shape[1]
        c = int(h.argmax()) if target is None else int(target[b])
        masks = {}

        def run(hh, start, masks=masks):
            for j in range(start, len(layers)):
                hh = hh * masks[j] if j in masks else layers[j](hh)
            return hh

        for k in reversed(chosen):
            hk = acts[k]
            jac = torch.autograd.functional.jacobian(lambda u, k=k: run(u, k + 1)[0], hk)  # (C, *shape)
            jac = jac.reshape(n_classes, -1)
            hflat = hk.reshape(-1)
            scores = []
            for i in range(hflat.numel()):
                v = [float(hflat[i] * jac[j, i]) for j in range(n_classes)]
                scores.append(float(torch.tensor(v, dtype=torch.float64).softmax(0)[c]))
            units = list(range(hflat.numel()))
            if active_only:
                units.sort(key=lambda i: (0 if hflat[i] > 0 else 1, -scores[i] if hflat[i] > 0 else 0, i))
            else:
                units.sort(key=lambda i: (-scores[i], i))
            units = units[: width_count(width, len(units))]
            thr = -float("inf") if threshold is None else 1.0 / n_classes
            kept = [i for i in units if scores[i] > thr and (hflat[i] > 0 or not active_only)]
            if not kept:
                kept = units[:1]
            mask = torch.zeros_like(hflat)
            mask[kept] = 1.0
            masks[k] = mask.reshape(hk.shape)
        grad = torch.autograd.functional.jacobian(lambda u, c=c: run(u, 0)[0, c], xb)
        out.append((xb * grad)[0])
    return torch.stack(out)


def tiny_mlp(sizes=(12, 9, 7, 5), seed=0):
    """A small float64 MLP with non-zero biases."""
    model = MLP(sizes, seed=seed).double().eval()
    return model


def tiny_cnn(seed=0):
    """A tiny ReLU conv net with max-pooling (1x8x8 input, 4 classes)."""
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16, 6),
            nn.ReLU(),
            nn.Linear(6, 4),
        )
        .double()
        .eval()
    )


SETTINGS = [(None, None), (3, None), ("40%", None), (None, 1), (2, 1), (1, 2)]


@pytest.mark.parametrize("width,depth", SETTINGS)
def test_closed_form_matches_literal_algorithm(width, depth):
    model = tiny_mlp()
    x = torch.rand(4, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = Pathwise(model, width=width, depth=depth).attribute(x)
    slow = literal_pathwise(model, x, None, width, depth)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("width,depth", SETTINGS)
def test_autograd_form_matches_closed_form_on_mlp(width, depth):
    model = MLP((20, 15, 10, 8, 6), seed=3).double().eval()
    x = torch.rand(5, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    method = Pathwise(model, width=width, depth=depth)
    layers, relus, selected = method._layers(x)
    t = model(x).argmax(1)
    auto = method._final(layers, method._select_autograd(layers, relus, selected, x, t), x, t)
    assert torch.allclose(method.attribute(x), auto, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("width,depth", [(None, None), (5, None), (None, 2), ("30%", 1)])
def test_cnn_matches_literal_algorithm(width, depth):
    model = tiny_cnn()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([0, 2, 3])
    fast = Pathwise(model, width=width, depth=depth).attribute(x, target=target)
    slow = literal_pathwise(model, x, target, width, depth)
    assert fast.shape == x.shape
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)


def test_given_target_and_active_only_match_literal():
    model = tiny_mlp(seed=5)
    x = torch.rand(4, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([1, 0, 4, 2])
    fast = Pathwise(model, width=2, active_only=True).attribute(x, target=target)
    slow = literal_pathwise(model, x, target, width=2, active_only=True)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_no_threshold_active_only_equals_input_times_gradient(net):
    model = MLP((30, 20, 10, 4), seed=7).double().eval() if net == "mlp" else tiny_cnn(seed=7)
    shape = (6, 30) if net == "mlp" else (6, 1, 8, 8)
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8)).requires_grad_(True)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    out = model(x).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(out, x)
    a = Pathwise(model, threshold=None, active_only=True).attribute(x.detach(), target=target)
    assert torch.allclose(a, x.detach() * grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("width", [None, 3])
def test_completeness_gap(width):
    model = MLP((16, 12, 8, 5), seed=9).double().eval()
    x = torch.rand(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    method = Pathwise(model, width=width)
    t = model(x).argmax(1)
    masks = method.select(x)
    f_p = method.masked_output(x, masks).gather(1, t[:, None])[:, 0]
    b_p = method.masked_output(torch.zeros_like(x), masks).gather(1, t[:, None])[:, 0]
    a = method.attribute(x)
    assert torch.allclose(a.sum(1), f_p - b_p, atol=1e-12)
    # and it is not the logit itself in general: the gap is real
    assert not torch.allclose(a.sum(1), model(x).gather(1, t[:, None])[:, 0], atol=1e-6)


def test_float32_runs_and_matches_float64():
    model = MLP((784, 64, 32, 10), seed=0).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a32 = Pathwise(model).attribute(x)
    a64 = Pathwise(model.double()).attribute(x.double())
    assert a32.dtype == torch.float32 and a32.shape == x.shape
    assert torch.allclose(a32.double(), a64, atol=1e-4)


def test_model_unchanged_and_no_grad_left():
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Pathwise(model, width=3).attribute(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_rejects_models_it_cannot_explain():
    x = torch.rand(2, 6)
    with pytest.raises(XWPError, match="ReLU"):
        Pathwise(nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))).attribute(x)
    with pytest.raises(XWPError, match="no nn.ReLU|has none"):
        Pathwise(nn.Sequential(nn.Linear(6, 3))).attribute(x)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.r = nn.Linear(6, 4), nn.Linear(4, 3), nn.ReLU()

        def forward(self, x):
            return self.b(self.r(self.a(x)) + self.a(x))  # a skip connection

    with pytest.raises(XWPError, match="feed-forward"):
        Pathwise(Functional()).attribute(x)
    with pytest.raises(XWPError, match="width"):
        Pathwise(tiny_mlp(), width=0)
    with pytest.raises(XWPError, match="depth"):
        Pathwise(tiny_mlp(), depth=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = tiny_cnn()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    cpu = Pathwise(model, width=4).attribute(x)
    gpu = Pathwise(model.cuda(), width=4).attribute(x.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-10)


def test_problem_says_why_for_the_app():
    assert Pathwise.problem(tiny_mlp(), torch.rand(1, 12, dtype=torch.float64)) is None
    assert Pathwise.problem(tiny_mlp()) is None  # without inputs: the layers alone
    for inputs in (torch.rand(1, 12), None):
        msg = Pathwise.problem(MLP((12, 5), seed=0), inputs)  # no hidden layer, so no ReLU
        assert msg.startswith("Pathwise does not apply") and "ReLU" in msg
    tanh = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    assert "Tanh" in Pathwise.problem(tanh, torch.rand(1, 6))


def test_registered_with_per_call_options():
    model = tiny_mlp(seed=11)
    x = torch.rand(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    method = make_method("pathwise", model)
    assert isinstance(method, Pathwise) and method.options == Pathwise.defaults
    narrow = method.attribute(x, width=1)
    assert torch.allclose(narrow, Pathwise(model, width=1).attribute(x), atol=0)
    assert torch.allclose(narrow, literal_pathwise(model, x, None, width=1), atol=1e-12, rtol=1e-10)
    assert torch.equal(method.attribute(x), Pathwise(model).attribute(x))  # the override was for one call
    with pytest.raises(XWPError, match="no option"):
        method.attribute(x, widht=1)

"""The MLP keeps its initial state and leaves global randomness alone."""

from __future__ import annotations

import pytest
import torch

import xwp
from xwp.models import MLP, parse_hidden


def test_shapes_and_flattening():
    m = MLP((784, 400, 100, 10), seed=0)
    x = torch.rand(3, 1, 28, 28)
    assert m(x).shape == (3, 10)
    torch.testing.assert_close(m(x), m(x.reshape(3, 784)))
    assert m.describe() == "784-400-100-10"
    assert m.n_parameters() == 784 * 400 + 400 + 400 * 100 + 100 + 100 * 10 + 10


@pytest.mark.parametrize("sizes", [(784, 10), (784, 64, 10), (20, 5, 5, 5, 3)])
def test_any_depth(sizes):
    m = MLP(sizes)
    assert len(m.linears) == len(sizes) - 1
    assert m(torch.rand(2, sizes[0])).shape == (2, sizes[-1])


def test_initial_state_is_kept_through_training():
    m = MLP((16, 8, 3), seed=1)
    start = {k: v.clone() for k, v in m.net.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    m(torch.rand(4, 16)).sum().backward()
    opt.step()
    assert not torch.equal(m.net[0].weight, start["0.weight"])
    for k, v in m.initial_state().items():
        torch.testing.assert_close(v, start[k])
    m0 = m.initial_model()
    for k, v in m0.net.state_dict().items():
        torch.testing.assert_close(v, start[k])
    assert not m0.training
    assert all(not b.requires_grad for b in m.buffers())
    assert len(list(m.parameters())) == 4  # the initial copy is not trainable


def test_seeds_are_deterministic_and_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = MLP((10, 4, 2), seed=5), MLP((10, 4, 2), seed=5), MLP((10, 4, 2), seed=6)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(a.net[0].weight, b.net[0].weight)
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


def test_kaiming_init():
    m = MLP((784, 400, 10), seed=0, init="kaiming")
    assert torch.equal(m.net[0].bias, torch.zeros(400))
    assert abs(float(m.net[0].weight.detach().std()) - (2 / 784) ** 0.5) < 0.005


def test_moves_with_its_initial_state():
    m = MLP((10, 4, 2)).double()
    assert all(v.dtype == torch.float64 for v in m.initial_state().values())


@pytest.mark.parametrize("bad", [(784,), (784, 0, 10), (784, -3, 10)])
def test_bad_sizes(bad):
    with pytest.raises(xwp.XWPError):
        MLP(bad)


def test_bad_init():
    with pytest.raises(xwp.XWPError, match="init"):
        MLP(init="xavier")


def test_parse_hidden():
    assert parse_hidden("400,100") == (400, 100)
    assert parse_hidden(" 256 ") == (256,)
    assert parse_hidden("") == ()
    with pytest.raises(xwp.XWPError, match="whole numbers"):
        parse_hidden("400,abc")

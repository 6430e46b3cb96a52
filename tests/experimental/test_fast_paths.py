"""The sync-free dense XWP / XWPc equals the sparse one; CUDA graphs and compile where available."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.support import random_trained_mlp
from xwp.attribution import XWP, XWPc
from xwp.errors import XWPError
from xwp.experimental.fast_paths import CapturedXWP, DenseXWP
from xwp.serve.compute import ComputeExecutor, is_batchable

pytestmark = pytest.mark.slow  # torch.compile and CUDA-graph paths outside the product


def sparse_inputs(n, d, density=0.3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=dtype)
    x[torch.rand(n, d, generator=gen) > density] = 0
    return x


@pytest.mark.parametrize("complementary", [False, True])
@pytest.mark.parametrize("output", ["softmax", "logits"])
@pytest.mark.parametrize("given", [True, False])
def test_dense_equals_sparse_in_float64(complementary, output, given):
    """To rounding: bit for bit on an Intel Xeon; on an AMD EPYC 1-3 values differed by <= 9e-16 of the largest."""
    model = random_trained_mlp((784, 64, 32, 10), seed=4)
    x = sparse_inputs(7, 784).reshape(7, 1, 28, 28)
    target = torch.arange(7) % 10 if given else None
    ref = (XWPc if complementary else XWP)(model, output=output).attribute(x, target=target)
    dense = DenseXWP(model, complementary=complementary, output=output, rows=3 * 784)  # 3 images a chunk
    got = dense.attribute(x, target=target)
    assert got.shape == x.shape
    scale = ref.abs().max().item()
    assert (got - ref).abs().max().item() <= 1e-14 * scale
    assert torch.equal(got == 0, ref == 0)  # the same features are zero
    assert (got != ref).sum().item() <= 0.01 * ref.numel()  # BLAS kernel differences touch a few values only


def test_dense_equals_sparse_on_a_sequential_with_initial_model():
    torch.manual_seed(0)
    init = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = sparse_inputs(5, 20, seed=1)
    for complementary, cls in ((False, XWP), (True, XWPc)):
        ref = cls(model, init).attribute(x, target=2)
        assert torch.equal(DenseXWP(model, init, complementary=complementary).attribute(x, target=2), ref)


def test_dense_in_float32_is_close_to_sparse():
    model = random_trained_mlp((784, 64, 32, 10), seed=5, dtype=torch.float32)
    x = sparse_inputs(4, 784, dtype=torch.float32)
    for complementary, cls in ((False, XWP), (True, XWPc)):
        ref = cls(model).attribute(x, target=1)
        got = DenseXWP(model, complementary=complementary).attribute(x, target=1)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_zero_features_get_exactly_zero_and_the_model_is_untouched():
    model = random_trained_mlp((30, 8, 4), seed=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = sparse_inputs(3, 30, density=0.2)
    a = DenseXWP(model).attribute(x)
    assert torch.all(a[x == 0] == 0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_dense_checks_its_inputs():
    model = random_trained_mlp((30, 8, 4), seed=7)
    dense = DenseXWP(model)
    with pytest.raises(XWPError, match="features"):
        dense.attribute(torch.rand(2, 31, dtype=torch.float64))
    with pytest.raises(XWPError, match="out of range"):
        dense.attribute(torch.rand(2, 30, dtype=torch.float64), target=4)
    with pytest.raises(XWPError, match="batch dimension"):
        dense.attribute(torch.rand(30))
    with pytest.raises(XWPError, match="softmax"):
        DenseXWP(model, output=lambda z: z)


def test_dense_is_batchable_and_batches_through_the_executor():
    model = random_trained_mlp((30, 8, 4), seed=8)
    dense = DenseXWP(model)
    assert is_batchable(dense)
    ex = ComputeExecutor(threads=1)
    try:
        xs = [sparse_inputs(1, 30, seed=s) for s in range(5)]
        got = [f.result(10) for f in [ex.attribute(dense, x, 1) for x in xs]]
    finally:
        ex.shutdown()
    for x, a in zip(xs, got, strict=True):
        torch.testing.assert_close(a, XWP(model).attribute(x, target=1), rtol=1e-12, atol=1e-12)


def test_captured_needs_cuda():
    model = random_trained_mlp((30, 8, 4), seed=9)
    with pytest.raises(XWPError, match="CUDA"):
        CapturedXWP(DenseXWP(model))


@pytest.mark.slow
def test_compiled_dense_matches_eager():
    pytest.importorskip("torch._inductor")
    model = random_trained_mlp((64, 16, 8, 4), seed=10)
    x = sparse_inputs(6, 64)
    eager = DenseXWP(model, rows=2 * 64).attribute(x, target=1)
    try:
        compiled = DenseXWP(model, rows=2 * 64, compile=True).attribute(x, target=1)
    except Exception as e:  # no working compiler toolchain: nothing to compare
        pytest.skip(f"torch.compile unavailable: {type(e).__name__}")
    torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=1e-12)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("complementary", [False, True])
def test_dense_on_cuda_matches_float64_sparse_on_cpu(complementary):
    model = random_trained_mlp((784, 400, 100, 10), seed=11)
    x = sparse_inputs(16, 784)
    cls = XWPc if complementary else XWP
    ref = cls(model).attribute(x, target=torch.arange(16) % 10)
    got = DenseXWP(model.cuda(), complementary=complementary).attribute(x.cuda(), target=torch.arange(16) % 10)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("given", [True, False])
def test_captured_graph_matches_dense_and_pads(given):
    model = random_trained_mlp((784, 400, 100, 10), seed=12, dtype=torch.float32).cuda()
    dense = DenseXWP(model)
    graph = CapturedXWP(dense, batch=4)
    for n in (1, 3, 4, 1):  # replays with other inputs and padding
        x = sparse_inputs(n, 784, seed=n, dtype=torch.float32).cuda()
        t = torch.arange(n) % 10 if given else None
        torch.testing.assert_close(graph.attribute(x, t), dense.attribute(x, t), rtol=0, atol=0)
    with pytest.raises(XWPError, match="at most 4"):
        graph.attribute(torch.zeros(5, 784, device="cuda"))


@pytest.mark.cuda
@cuda
def test_dense_call_has_no_host_sync():
    model = random_trained_mlp((784, 400, 100, 10), seed=13, dtype=torch.float32).cuda()
    dense = DenseXWP(model)
    x = sparse_inputs(2, 784, dtype=torch.float32).cuda()
    t = torch.tensor([1, 2], device="cuda")
    dense.attribute(x, t)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        dense.attribute(x, t)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_compiled_sparse_matches_xwp_and_xwpc(output):
    from xwp.experimental.fast_paths import CompiledXWP, CompiledXWPc

    model = random_trained_mlp((64, 16, 8, 4), seed=14)
    x = sparse_inputs(5, 64, seed=2)
    for compiled, eager in ((CompiledXWP, XWP), (CompiledXWPc, XWPc)):
        ref = eager(model, output=output).attribute(x, target=torch.arange(5) % 4)
        try:
            got = compiled(model, output=output, chunk_elements=16 * 37).attribute(x, target=torch.arange(5) % 4)
        except Exception as e:  # no working compiler toolchain: nothing to compare
            pytest.skip(f"torch.compile unavailable: {type(e).__name__}")
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)  # the fused update rounds differently


def test_compiled_sparse_falls_back_to_eager_for_a_sequential():
    from xwp.experimental.fast_paths import CompiledXWP

    torch.manual_seed(1)
    init = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    model = nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = sparse_inputs(3, 12)
    assert torch.equal(CompiledXWP(model, init).attribute(x, target=1), XWP(model, init).attribute(x, target=1))


@pytest.mark.cuda
@cuda
def test_compiled_sparse_on_cuda_matches_float64_on_cpu():
    from xwp.experimental.fast_paths import CompiledXWP

    model = random_trained_mlp((784, 400, 100, 10), seed=15)
    x = sparse_inputs(8, 784)
    ref = XWP(model).attribute(x, target=3)
    got = CompiledXWP(model.cuda()).attribute(x.cuda(), target=3)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-9, atol=1e-11)

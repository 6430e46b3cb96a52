"""XWP / XWPc (xwp/attribution/weight_perturbation.py) against the literal definitions that really swap weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xwp
from tests.support import random_trained_mlp
from xwp.attribution import XWP, XWPc
from xwp.attribution.reference import xwp_reference, xwpc_reference

SHAPES = [(12, 7, 5, 4), (20, 9, 3), (16, 6), (30, 11, 8, 6, 5)]


def reference_xwp(model, model0, x, target, output="softmax"):
    """The oracle: eq. 3 by swapping the weights and rerunning (xwp.attribution.reference)."""
    return xwp_reference(model, x, target, model0, output)


def reference_xwpc(model, model0, x, target, output="softmax", literal=False):
    """The oracle for XWPc (and the printed eq. 5 with ``literal``)."""
    return xwpc_reference(model, x, target, model0, output, "eq5-literal" if literal else "isolated")


@pytest.mark.parametrize("sizes", SHAPES)
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_xwp_matches_weight_swapping_reference(sizes, output):
    model = random_trained_mlp(sizes, seed=len(sizes))
    model0 = model.initial_model()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, sizes[0], generator=gen, dtype=torch.float64)
    x[x < 0.3] = 0.0  # some background
    target = torch.randint(0, sizes[-1], (5,), generator=gen)
    fast = XWP(model, output=output).attribute(x, target=target)
    torch.testing.assert_close(fast, reference_xwp(model, model0, x, target, output), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sizes", SHAPES)
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_xwpc_matches_weight_swapping_reference(sizes, output):
    model = random_trained_mlp(sizes, seed=len(sizes) + 7)
    model0 = model.initial_model()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, sizes[0], generator=gen, dtype=torch.float64)
    x[x < 0.3] = 0.0
    target = torch.randint(0, sizes[-1], (4,), generator=gen)
    fast = XWPc(model, output=output).attribute(x, target=target)
    torch.testing.assert_close(fast, reference_xwpc(model, model0, x, target, output), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls,ref", [(XWP, reference_xwp), (XWPc, reference_xwpc)])
def test_confident_predictions_keep_float32_precision(cls, ref):
    """p_t within float32 rounding of 1: naive differences of softmax outputs would be 0 or 6e-8 steps."""
    model64 = random_trained_mlp((40, 16, 8, 5), seed=21)
    with torch.no_grad():
        model64.linears[-1].weight.mul_(25.0)  # very confident logits
    x = torch.rand(4, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = model64(x).argmax(1)
    assert (torch.softmax(model64(x), 1).max(1).values > 1 - 1e-7).all()
    expected = ref(model64, model64.initial_model(), x, target)
    model32 = copy.deepcopy(model64).float()
    got = cls(model32).attribute(x.float(), target=target).double()
    if cls is XWP:  # its effects are far below float32's resolution near 1 (XWPc starts from W0: no such issue)
        assert 0 < expected.abs().max() < 1e-6
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def test_initial_model_argument_equals_kept_state():
    model = random_trained_mlp((10, 6, 3), seed=3)
    x = torch.rand(3, 10, dtype=torch.float64)
    a = XWP(model).attribute(x, target=1)
    b = XWP(model, model.initial_model()).attribute(x, target=1)
    torch.testing.assert_close(a, b)


def test_works_on_plain_sequential_with_flatten():
    mlp = random_trained_mlp((16, 5, 3), seed=4)
    seq = nn.Sequential(nn.Flatten(), copy.deepcopy(mlp.net[0]), nn.ReLU(), copy.deepcopy(mlp.net[2]))
    seq0 = nn.Sequential(nn.Flatten(), *copy.deepcopy(mlp.initial_model().net))
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    for cls in (XWP, XWPc):
        torch.testing.assert_close(cls(seq, seq0).attribute(x, target=2), cls(mlp).attribute(x, target=2))


def test_sequential_without_initial_state_is_a_clear_error():
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(xwp.XWPError, match="initial state"):
        XWP(seq)


def test_other_first_layers_are_refused():
    conv1d = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26, 10))
    with pytest.raises(xwp.XWPError, match="nn.Linear or nn.Conv2d"):
        XWP(conv1d, conv1d)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    assert XWP(conv, conv).attribute(torch.rand(1, 1, 28, 28)).shape == (1, 1, 28, 28)  # tests/test_conv_xwp.py


@pytest.mark.parametrize("cls", [XWP, XWPc])
def test_zero_features_are_exactly_zero(cls):
    model = random_trained_mlp((25, 8, 4), seed=5)
    x = torch.rand(6, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x[:, ::3] = 0.0
    attr = cls(model).attribute(x, target=torch.arange(6) % 4)
    assert (attr[x == 0] == 0).all()
    assert (attr[x != 0] != 0).sum() > 0.5 * (x != 0).sum()  # the others do get scores


@pytest.mark.parametrize("cls", [XWP, XWPc])
def test_chunking_does_not_change_results(cls):
    model = random_trained_mlp((40, 13, 5), seed=6)
    x = torch.rand(7, 40, dtype=torch.float64)
    whole = cls(model).attribute(x, target=2)
    chunked = cls(model, chunk_elements=13 * 3).attribute(x, target=2)  # 3 rows at a time
    torch.testing.assert_close(whole, chunked)


def test_untrained_model_has_zero_xwp():
    model = xwp.MLP((20, 6, 3), seed=0).double()
    x = torch.rand(2, 20, dtype=torch.float64)
    assert XWP(model).attribute(x, target=0).abs().max() == 0
    assert XWPc(model).attribute(x, target=0).abs().max() == 0


def test_batch_of_images_matches_one_by_one():
    model = random_trained_mlp((36, 10, 4), seed=8)
    x = torch.rand(5, 1, 6, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 0])
    batch = XWP(model).attribute(x, target=target)
    single = torch.cat([XWP(model).attribute(x[i : i + 1], target=int(target[i])) for i in range(5)])
    assert batch.shape == x.shape
    torch.testing.assert_close(batch, single)


def test_literal_eq5_is_constant_minus_xwpc_and_ranks_in_reverse():
    """The printed eq. 5 equals C(x) - R^c_i: same for background, reversed order for the digit."""
    model = random_trained_mlp((30, 9, 4), seed=9)
    model0 = model.initial_model()
    x = torch.rand(3, 30, dtype=torch.float64)
    x[:, :10] = 0.0
    target = torch.tensor([0, 1, 3])
    literal = XWPc(model, rule="eq5-literal").attribute(x, target=target)
    torch.testing.assert_close(literal, reference_xwpc(model, model0, x, target, literal=True), rtol=1e-9, atol=1e-12)
    ours = XWPc(model).attribute(x, target=target)
    const = literal + ours  # C(x), the same for every feature
    torch.testing.assert_close(const, const[:, :1].expand_as(const))
    nz = x[0] != 0
    assert torch.equal(torch.argsort(literal[0][nz]), torch.argsort(-ours[0][nz]))


def test_literal_eq5_loses_on_deletion_for_a_trained_model(trained, typeface):
    """On real digits the literal reading removes background first: far worse deletion AUC."""
    from xwp.evaluation.metrics import deletion_auc

    test = typeface[1].sample(32, seed=0)
    ours = XWPc(trained).attribute(test.images, target=test.labels)
    literal = XWPc(trained, rule="eq5-literal").attribute(test.images, target=test.labels)
    ours_auc = deletion_auc(trained, test.images, test.labels, ours).mean()
    literal_auc = deletion_auc(trained, test.images, test.labels, literal).mean()
    assert ours_auc < 0.5 * literal_auc


def test_targets_int_tensor_list_and_none():
    model = random_trained_mlp((10, 5, 3), seed=10)
    x = torch.rand(3, 10, dtype=torch.float64)
    a = XWP(model).attribute(x, target=2)
    b = XWP(model).attribute(x, target=torch.tensor([2, 2, 2]))
    c = XWP(model).attribute(x, target=[2, 2, 2])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    pred = model(x).argmax(1)
    torch.testing.assert_close(XWP(model).attribute(x), XWP(model).attribute(x, target=pred))


@pytest.mark.parametrize("bad", [3, -1, [0, 1], 1.5])
def test_bad_targets_are_clear_errors(bad):
    model = random_trained_mlp((10, 5, 3), seed=11)
    with pytest.raises(xwp.XWPError):
        XWP(model).attribute(torch.rand(3, 10, dtype=torch.float64), target=bad)


def test_wrong_input_size_is_a_clear_error():
    model = random_trained_mlp((10, 5, 3), seed=11)
    with pytest.raises(xwp.XWPError, match="features"):
        XWP(model).attribute(torch.rand(3, 11, dtype=torch.float64), target=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = random_trained_mlp((784, 400, 100, 10), seed=13, dtype=torch.float32)
    x = torch.rand(8, 1, 28, 28)
    x[x < 0.5] = 0
    for cls in (XWP, XWPc):
        cpu = cls(model).attribute(x, target=3)
        gpu = cls(copy.deepcopy(model).cuda()).attribute(x.cuda(), target=3)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [XWP, XWPc])
def test_image_chunks_do_not_change_results(cls):
    model = random_trained_mlp((30, 9, 4), seed=22)
    x = torch.rand(11, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = torch.arange(11) % 4
    torch.testing.assert_close(
        cls(model, image_chunk=3).attribute(x, target=target), cls(model).attribute(x, target=target)
    )
    torch.testing.assert_close(cls(model, image_chunk=3).attribute(x), cls(model).attribute(x))

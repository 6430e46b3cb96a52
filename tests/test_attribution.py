"""XWP / XWPc against slow references that really swap weights; the registry; Captum; RISE."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_trained_mlp
from torch import nn

import xwp
from xwp.attribution import METHODS, RISE, XWP, XWPc, make_method, rise_masks, superpixel_mask

SHAPES = [(12, 7, 5, 4), (20, 9, 3), (16, 6), (30, 11, 8, 6, 5)]


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
    from xwp.metrics import deletion_auc

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


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_required_methods():
    required = {
        "xwp",
        "xwpc",
        "occlusion",
        "shapley",
        "kernelshap",
        "rise",
        "ig",
        "lrp",
        "saliency",
        "deeplift",
        "gradientshap",
        "random",
    }
    assert required <= set(METHODS)
    for spec in METHODS.values():
        assert spec.label and spec.summary and spec.kind


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_keeps_shape_and_never_touches_the_model(name, trained, typeface):
    x = typeface[1].images[:3]
    y = typeface[1].labels[:3]
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    options = {"n_samples": 2} if name in ("shapley",) else {}
    if name == "kernelshap":
        options = {"n_samples": 50, "perturbations_per_eval": 50}
    if name == "rise":
        options = {"n_masks": 100}
    attr = make_method(name, trained, **options).attribute(x, target=y)
    assert attr.shape == x.shape
    assert torch.isfinite(attr).all()
    after = trained.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not any(hasattr(m, "rule") for m in trained.modules())  # no LRP state left on a shared model
    assert all(not m._forward_hooks and not m._backward_hooks for m in trained.modules())


def test_unknown_method_and_option_are_clear_errors(trained):
    with pytest.raises(xwp.XWPError, match="unknown method"):
        make_method("gradcam", trained)
    with pytest.raises(xwp.XWPError, match="no option"):
        make_method("ig", trained, steps=3)


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


def test_random_is_seeded():
    model = xwp.MLP((16, 4, 2))
    x = torch.rand(2, 16)
    a = make_method("random", model).attribute(x)
    torch.testing.assert_close(a, make_method("random", model).attribute(x))
    assert not torch.equal(a, make_method("random", model, seed=1).attribute(x))


# ----------------------------------------------------------------------------- RISE


class OnePixel(nn.Module):
    """A classifier whose class-0 logit is 10 * x[pixel]: only that pixel matters."""

    def __init__(self, pixel, side=12):
        super().__init__()
        self.pixel, self.side = pixel, side
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        v = x.reshape(x.shape[0], -1)[:, self.pixel]
        return torch.stack([10 * v, torch.zeros_like(v)], 1) + 0 * self.dummy


def test_rise_peaks_at_the_only_pixel_that_matters():
    side, pixel = 12, 5 * 12 + 7
    model = OnePixel(pixel, side)
    x = torch.ones(1, 1, side, side)
    sal = RISE(model, output="logits").attribute(x, target=0, n_masks=4000, grid_size=4, p_keep=0.5)
    assert sal.shape == x.shape
    assert int(sal.reshape(-1).argmax()) == pixel
    # Monte-Carlo identity: with logit 10 * m_k(pixel), saliency_j = 10 * E[m(pixel) m(j)] / p
    masks = rise_masks(4000, 4, 0.5, side, side, 0, "cpu").reshape(4000, -1)
    expected = 10 * (masks[:, pixel : pixel + 1] * masks).sum(0) / (4000 * 0.5)
    torch.testing.assert_close(sal.reshape(-1), expected, rtol=1e-5, atol=1e-5)


def test_rise_batched_equals_per_image_loop():
    model = random_trained_mlp((64, 9, 3), seed=12, dtype=torch.float32)
    x = torch.rand(3, 1, 8, 8)
    target = torch.tensor([0, 2, 1])
    batched = RISE(model).attribute(x, target=target, n_masks=300, grid_size=3, batch_rows=128)
    masks = rise_masks(300, 3, 0.5, 8, 8, 0, "cpu")
    for b in range(3):
        with torch.no_grad():
            p = torch.softmax(model(x[b : b + 1] * masks[:, None]), 1)[:, target[b]]  # (N,)
        expected = (p[:, None, None] * masks).sum(0) / (300 * 0.5)
        torch.testing.assert_close(batched[b, 0], expected, rtol=1e-5, atol=1e-6)


def test_rise_masks_follow_the_recipe():
    m = rise_masks(500, 7, 0.3, 28, 28, 1, "cpu")
    assert m.shape == (500, 28, 28)
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert abs(float(m.mean()) - 0.3) < 0.03
    assert np.unique(m.numpy().round(3)).size > 10  # upsampled, not binary


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


def test_chunks_shrink_on_cuda_out_of_memory():
    from xwp.attribution import run_chunked

    seen = []

    def work(start, stop):
        if stop - start > 4:
            raise torch.cuda.OutOfMemoryError("simulated")
        seen.append((start, stop))

    run_chunked(23, 16, work)
    covered = [i for a, b in seen for i in range(a, b)]
    assert covered == list(range(23)) and max(b - a for a, b in seen) <= 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_every_method_runs_on_cuda_like_on_cpu(trained, typeface):
    x, y = typeface[1].images[:4], typeface[1].labels[:4]
    gpu = copy.deepcopy(trained).cuda()
    small = {"shapley": {"n_samples": 2}, "kernelshap": {"n_samples": 50}, "rise": {"n_masks": 200}}
    for name in METHODS:
        a_gpu = make_method(name, gpu, **small.get(name, {})).attribute(x.cuda(), target=y.cuda())
        assert a_gpu.device.type == "cuda" and a_gpu.shape == x.shape and torch.isfinite(a_gpu).all(), name
        if name in ("xwp", "xwpc", "occlusion", "ig", "saliency", "deeplift", "lrp"):  # deterministic ones
            a_cpu = make_method(name, trained).attribute(x, target=y)
            torch.testing.assert_close(a_gpu.cpu(), a_cpu, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("cls", [XWP, XWPc])
def test_image_chunks_do_not_change_results(cls):
    model = random_trained_mlp((30, 9, 4), seed=22)
    x = torch.rand(11, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = torch.arange(11) % 4
    torch.testing.assert_close(
        cls(model, image_chunk=3).attribute(x, target=target), cls(model).attribute(x, target=target)
    )
    torch.testing.assert_close(cls(model, image_chunk=3).attribute(x), cls(model).attribute(x))


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

"""The method registry (xwp/attribution/registry.py): every method, its options, tags and contract."""

from __future__ import annotations

import copy

import pytest
import torch

import xwp
from xwp.attribution import METHODS, make_method


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


def test_random_is_seeded():
    model = xwp.MLP((16, 4, 2))
    x = torch.rand(2, 16)
    a = make_method("random", model).attribute(x)
    torch.testing.assert_close(a, make_method("random", model).attribute(x))
    assert not torch.equal(a, make_method("random", model, seed=1).attribute(x))


def test_random_map_depends_only_on_seed_and_image():
    model = xwp.MLP((16, 4, 2))
    method = make_method("random", model)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 16, generator=g)
    alone = torch.cat([method.attribute(x[i : i + 1]) for i in range(6)])  # one image per call
    torch.testing.assert_close(method.attribute(x), alone, rtol=0, atol=0)  # batched == one at a time
    moved = method.attribute(torch.cat([torch.rand(3, 16, generator=g), x[2:3]]))  # image 2 at position 3
    torch.testing.assert_close(moved[3], alone[2], rtol=0, atol=0)
    assert not torch.equal(moved[0], alone[0])  # position 0 of another batch: another image, another map
    for i in range(6):  # every two different images get different maps
        for j in range(i):
            assert not torch.equal(alone[i], alone[j])
    torch.testing.assert_close(method.attribute(x.double()).float(), alone, rtol=0, atol=0)  # same draws
    reseeded = method.attribute(x, seed=1)
    assert all(not torch.equal(reseeded[i], alone[i]) for i in range(6))  # the seed changes every map
    torch.testing.assert_close(method.attribute(x, seed=1), reseeded, rtol=0, atol=0)
    assert method.attribute(x.reshape(6, 1, 4, 4)).shape == (6, 1, 4, 4)
    assert ((alone >= 0) & (alone < 1)).all()
    from xwp.attribution.baselines import image_seed

    drawn = torch.rand(16, generator=torch.Generator().manual_seed(image_seed(0, x[4])), dtype=torch.float64)
    torch.testing.assert_close(alone[4], drawn.float(), rtol=0, atol=0)  # the documented construction


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


# ----------------------------------------------------------------------------- declaring methods


def test_menu_order_is_unchanged_across_the_family_modules():
    assert list(METHODS) == [
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
        # related work, after the paper's methods and baselines
        "pathwise",
        "lrp-epsilon-plus-flat",
        "lrp-gamma-box",
        "ad-occlusion",
        "random",
    ]


def test_method_sets_are_registry_tags():
    from xwp.attribution import methods_tagged
    from xwp.evaluation.protocol import DEFAULT_METHODS
    from xwp.study.run import CONV_STUDY_METHODS, FIGURE_METHODS, STUDY_METHODS

    assert methods_tagged("app-default") == ("xwp", "xwpc", "occlusion", "ig")
    assert methods_tagged("evaluate") == DEFAULT_METHODS
    assert set(DEFAULT_METHODS) == {"xwp", "xwpc", "occlusion", "shapley", "rise", "ig", "lrp", "random"}
    # every method but AD occlusion, which equals occlusion on an MLP: the study adds it for CNNs only
    assert STUDY_METHODS == methods_tagged("study") == tuple(m for m in METHODS if m != "ad-occlusion")
    assert CONV_STUDY_METHODS == methods_tagged("study-conv") == ("ad-occlusion",)
    assert FIGURE_METHODS == methods_tagged("figure") == ("xwp", "xwpc", "occlusion", "shapley", "rise", "ig", "lrp")
    with pytest.raises(xwp.XWPError, match="unknown tag"):
        methods_tagged("favourites")


def test_defaults_are_declared_once_on_the_class():
    for name, spec in METHODS.items():
        assert spec.defaults == spec.cls.defaults, name
        assert spec.cls.__module__.startswith("xwp.attribution."), name
    assert METHODS["xwp"].cls is xwp.XWP and METHODS["rise"].cls is xwp.RISE


def test_options_bind_at_construction_and_override_per_call(trained, typeface):
    x = typeface[1].images[:2]
    a = make_method("rise", trained, n_masks=64).attribute(x, target=1)
    b = xwp.RISE(trained, n_masks=64).attribute(x, target=1)
    c = xwp.RISE(trained).attribute(x, target=1, n_masks=64)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(xwp.XWPError, match="no option"):
        xwp.RISE(trained, masks=3)
    with pytest.raises(xwp.XWPError, match="no option"):
        xwp.XWP(trained, steps=3)
    with pytest.raises(xwp.XWPError, match="no option"):
        make_method("random", trained).attribute(x, seeds=1)


def test_a_new_method_is_one_decorated_class():
    from xwp.attribution import Method, register

    @register("test-ones", "Ones", "baseline", "All ones.", "-", rank=15, tags=("study",))
    class Ones(Method):
        defaults = {"value": 1.0}

        def attribute(self, inputs, target=None, **overrides):
            return torch.full_like(inputs, self.call_options(overrides)["value"])

    try:
        assert list(METHODS).index("test-ones") == 1  # rank 15 sits between xwp (10) and xwpc (20)
        assert "test-ones" in xwp.attribution.methods_tagged("study")
        model = xwp.MLP((4, 3, 2))
        assert make_method("test-ones", model, value=2.0).attribute(torch.zeros(1, 4)).eq(2.0).all()
        with pytest.raises(ValueError, match="unknown tag"):
            register("x", "X", "baseline", "-", "-", rank=1, tags=("nope",))
    finally:
        del METHODS["test-ones"]

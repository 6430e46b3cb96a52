"""XWP / XWPc for convolutional first layers against the literal definitions (two convolutions per pixel)."""

from __future__ import annotations

import copy
import json
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xwp
from tests.support import random_trained_mlp
from xwp.attribution import XWP, XWPc
from xwp.attribution.first_layer import split_first_layer
from xwp.attribution.reference import evidence, xwp_reference, xwpc_reference
from xwp.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint
from xwp.models import CNN, build_model

# (in channels, image side, out channels, kernel, stride, padding, dilation, pool after the conv)
SHAPES = [
    (1, 8, 4, 3, 1, 1, 1, True),  # "same" padding, pooled
    (1, 9, 3, 3, 2, 0, 1, False),  # stride 2, no padding
    (3, 8, 5, 4, 4, 0, 1, False),  # ViT-style patch embedding: stride = kernel
    (3, 7, 2, 5, 2, 2, 1, False),  # stride and padding, three channels
    (2, 8, 3, 3, 3, 1, 1, False),  # patch embedding with padding, side not a multiple of the stride
    (2, 9, 3, 3, 1, 2, 2, False),  # dilation
    (1, 6, 2, 4, 1, "same", 1, False),  # even kernel, torch's asymmetric "same" padding
]


def conv_net(c_in, side, c1, k, stride, pad, dil, pool, n_classes=5, seed=0):
    """A trained-looking float64 conv net and its initial copy (nn.Sequential starting with Conv2d)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = nn.Conv2d(c_in, c1, k, stride=stride, padding=pad, dilation=dil)
        out = conv(torch.zeros(1, c_in, side, side)).shape[-1]
        layers = [conv, nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
            out //= 2
        layers += [nn.Flatten(), nn.Linear(c1 * out * out, 7), nn.ReLU(), nn.Linear(7, n_classes)]
        model0 = nn.Sequential(*layers).double().eval()
        model = copy.deepcopy(model0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.4 * torch.randn_like(p))
    return model, model0


def images(b, c, side, seed=1, negative=False):
    """Random images with about a third of the elements exactly 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, side, side, generator=gen, dtype=torch.float64)
    if negative:
        x = 2 * x - 1
    x[torch.rand(x.shape, generator=gen) < 0.35] = 0.0
    return x


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_sequential_conv_matches_reference(shape, output):
    c_in, side, *_ = shape
    model, model0 = conv_net(*shape)
    x = images(3, c_in, side, negative=output == "logits")
    before = copy.deepcopy(model.state_dict())
    for target in (None, 2, torch.tensor([0, 4, 1])):
        t = model(x).argmax(1) if target is None else torch.as_tensor(target).expand(3)
        for cls, complement in ((XWP, False), (XWPc, True)):
            got = cls(model, model0, output=output, chunk_elements=97).attribute(x, target=target)
            ref = xwpc_reference if complement else xwp_reference
            want = ref(model, x, t, model0, output)
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
            assert (got[x == 0] == 0).all()  # zero pixels: exactly 0, never computed
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the model is never modified


def test_cnn_matches_reference_and_keeps_the_model():
    model = CNN(channels=(4, 6), kernel=3, hidden=(8,), n_classes=4, image_size=12, seed=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype))
    model.eval()
    model0 = model.initial_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(2, 1, 12)
    t = torch.tensor([1, 3])
    for cls, complement in ((XWP, False), (XWPc, True)):
        got = cls(model).attribute(x, target=t)  # initial state from the CNN's own buffers
        want = (xwpc_reference if complement else xwp_reference)(model, x, t, model0)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
        flat = cls(model).attribute(x.reshape(2, -1), target=t)  # flat inputs are reshaped
        torch.testing.assert_close(flat, got.reshape(2, -1), rtol=0, atol=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_eq5_literal_rule_on_a_conv():
    model, model0 = conv_net(*SHAPES[0])
    x = images(2, 1, 8)
    iso = XWPc(model, model0).attribute(x, target=1)
    lit = XWPc(model, model0, rule="eq5-literal").attribute(x, target=1)
    with torch.no_grad():
        w0 = F.conv2d(x, model0[0].weight, model[0].bias, padding=1)
        const = evidence(model(x), torch.tensor([1, 1])) - evidence(model[1:](w0), torch.tensor([1, 1]))
    torch.testing.assert_close(lit, const[:, None, None, None] - iso, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("c_in", [1, 3])
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_full_size_kernel_is_the_dense_layer(c_in, output):
    """A conv whose kernel covers the whole input is nn.Linear: the conv rule equals the MLP's rank-1 rule."""
    side = 5
    mlp = random_trained_mlp((c_in * side * side, 6, 4), seed=2)
    mlp0 = mlp.initial_model()

    def as_conv(m):
        conv = nn.Conv2d(c_in, 6, side).double()
        lin = nn.Linear(6, 4).double()
        with torch.no_grad():
            conv.weight.copy_(m.linears[0].weight.reshape(6, c_in, side, side))
            conv.bias.copy_(m.linears[0].bias)
            lin.load_state_dict(m.linears[1].state_dict())
        return nn.Sequential(conv, nn.Flatten(), nn.ReLU(), lin).eval()

    net, net0 = as_conv(mlp), as_conv(mlp0)
    x = images(4, c_in, side, seed=5)
    for cls in (XWP, XWPc):
        dense = cls(mlp, output=output).attribute(x.reshape(4, -1), target=1)
        conv = cls(net, net0, output=output).attribute(x, target=1)
        torch.testing.assert_close(conv.reshape(4, -1), dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_add_change_is_the_convolution_of_one_pixel(shape):
    """FirstLayer.add_change (the one path XWP and XWPc use) is conv_delta(x_i e_i), element by element."""
    c_in, side, *_ = shape
    model, model0 = conv_net(*shape)
    conv = model[0]
    first = split_first_layer(model)
    x = images(1, c_in, side)
    delta = model0[0].weight - conv.weight
    h_ref = first.pre(x, conv.weight.detach())  # (1, C1, Ho, Wo)
    n = x[0].numel()
    idx, values = torch.arange(n), torch.linspace(-1.5, 2.0, n, dtype=torch.float64)
    h = h_ref.expand(n, *h_ref.shape[1:]).clone()
    first.add_change(h, first.per_unit(delta), idx, values, tuple(x.shape[1:]))
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = values[i]
        want = h_ref[0] + F.conv2d(e.reshape(x.shape), delta, None, conv.stride, conv.padding, conv.dilation)[0]
        torch.testing.assert_close(h[i], want, rtol=1e-12, atol=1e-13)


def test_add_change_of_a_dense_layer_is_the_rank_one_rule():
    mlp = random_trained_mlp((20, 9, 3), seed=4)
    first = split_first_layer(mlp)
    w, w0 = mlp.linears[0].weight.detach(), mlp.initial_state()["0.weight"]
    h_ref = torch.randn(1, 9, dtype=torch.float64)
    idx, values = torch.tensor([0, 7, 19]), torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    h = h_ref.expand(3, 9).clone()
    first.add_change(h, first.per_unit(w0 - w), idx, values, (20,))
    want = h_ref + values[:, None] * (w0 - w)[:, idx].t()
    torch.testing.assert_close(h, want, rtol=1e-13, atol=1e-14)


def test_float32_cnn_and_chunking_agree():
    model = CNN(channels=(3,), kernel=5, hidden=(), n_classes=3, image_size=10, seed=1)
    x = images(5, 1, 10).float()
    a = XWP(model, chunk_elements=1).attribute(x)
    b = XWP(model, chunk_elements=1 << 22, image_chunk=2).attribute(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # float32 rounding of differently sized batches
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert (a[x == 0] == 0).all()


def test_conv_errors():
    model, model0 = conv_net(*SHAPES[0])
    with pytest.raises(xwp.XWPError, match="initial"):
        XWP(model)  # a plain nn.Sequential has no initial state
    with pytest.raises(xwp.XWPError, match=r"\(B, 1, H, W\)"):
        XWP(model, model0).attribute(torch.rand(2, 64))
    with pytest.raises(xwp.XWPError, match="out of range"):
        XWP(model, model0).attribute(images(1, 1, 8), target=9)
    cnn = CNN(image_size=12, channels=(2,), hidden=())
    with pytest.raises(xwp.XWPError, match="features"):
        XWP(cnn).attribute(torch.rand(2, 1, 28, 28))


# ----------------------------------------------------------------------------- the CNN family


def test_cnn_shapes_and_forward():
    m = CNN()
    assert m.describe() == "cnn 1x28x28 c32-c64 k3 p1 | 128-10"
    x = torch.rand(3, 1, 28, 28)
    assert m(x).shape == (3, 10)
    torch.testing.assert_close(m(x.reshape(3, 784)), m(x), rtol=0, atol=0)
    m3 = CNN(channels=(4, 4, 4), kernel=3, padding=0, hidden=(16, 8), n_classes=3, in_channels=3, image_size=32)
    assert m3(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_cnn_seeds_are_deterministic_and_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b, c = CNN(seed=5), CNN(seed=5), CNN(seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    # one draw per layer, in order, from the seed (skip_init: no hidden first draw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = [nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1), nn.Linear(64 * 49, 128)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        for layer in ref:
            layer.reset_parameters()
    assert torch.equal(a.net[0].weight, ref[0].weight) and torch.equal(a.net[3].weight, ref[1].weight)
    assert torch.equal(a.net[6].weight, ref[2].weight)


def small_set(n=64, seed=0):
    """A synthetic 10-class ImageSet of 28x28 images (fast; no dataset to build)."""
    from xwp.data.datasets import ImageSet

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    x = images(n, 1, 28, seed=seed).float() * 0.3
    for k in range(n):  # a bright bar whose row says the class
        x[k, 0, 2 + 2 * int(labels[k]), 4:24] = 1.0
    return ImageSet(x, labels, [str(i) for i in range(10)], "bars", "test", info={"gen": str(gen.initial_seed())})


def test_cnn_initial_state_is_kept_through_training():
    m = CNN(channels=(4,), hidden=(16,), seed=0)
    init = {k: v.clone() for k, v in m.initial_state().items()}
    xwp.train(m, small_set(), epochs=1, device="cpu")
    assert not torch.equal(m.net[0].weight, init["0.weight"])  # trained
    assert all(torch.equal(v, init[k]) for k, v in m.initial_state().items())  # initial state untouched
    m0 = m.initial_model()
    assert all(torch.equal(p, init[k]) for k, p in m0.net.named_parameters())
    assert not any(b.requires_grad for b in m.buffers())


def test_cnn_kaiming_and_moves_with_initial_state():
    m = CNN(channels=(4,), hidden=(), init="kaiming").double()
    assert (m.net[0].bias == 0).all()
    assert m.initial_state()["0.weight"].dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": ()},
        {"channels": (0,)},
        {"channels": (10**6,)},
        {"channels": (4,) * 5},
        {"kernel": 0},
        {"kernel": 3, "padding": 3},
        {"kernel": True},
        {"kernel": 2.0},
        {"channels": (4, 4, 4, 4), "padding": 0, "kernel": 5},  # shrinks below 2x2
        {"image_size": 0},
        {"in_channels": 9},
        {"hidden": (10**7,)},
        {"channels": (512, 512), "hidden": (4096,)},  # over the parameter limit
        {"init": "xavier"},
    ],
)
def test_bad_cnn_sizes(kwargs):
    with pytest.raises(xwp.XWPError):
        CNN(**kwargs)


# ----------------------------------------------------------------------------- checkpoints


def test_cnn_checkpoint_round_trip(tmp_path):
    m = CNN(channels=(3, 5), kernel=5, padding=1, hidden=(7,), n_classes=4, seed=2)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1)
    path = save_checkpoint(tmp_path / "c.safetensors", m, {"dataset": "x", "sizes": [1, 2]})
    ck = load_checkpoint(path)
    assert isinstance(ck.model, CNN) and ck.meta["arch"] == "cnn" and "sizes" not in ck.meta
    assert ck.model.arch() == m.arch() and ck.meta["channels"] == [3, 5]
    for (k, v), w in zip(ck.model.state_dict().items(), m.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(ck.model(x), m.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(XWP(ck.model).attribute(x, 1), XWP(m).attribute(x, 1), rtol=0, atol=0)
    assert torch.equal(ck.initial_model.net[0].weight, m.initial_state()["0.weight"])
    mlp = load_checkpoint(checkpoint_bytes(xwp.MLP((784, 8, 10))))
    assert isinstance(mlp.model, xwp.MLP) and mlp.meta["arch"] == "mlp"


def _with_meta(data: bytes, **changes) -> bytes:
    """The checkpoint ``data`` with its JSON metadata keys replaced (None deletes a key)."""
    from safetensors.torch import load, save

    (n,) = struct.unpack("<Q", data[:8])
    info = json.loads(data[8 : 8 + n])["__metadata__"]
    meta = json.loads(info["meta"])
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    info["meta"] = json.dumps(meta)
    return save(load(data), metadata=info)


HOSTILE = [
    {"arch": "transformer"},
    {"arch": ["cnn"]},
    {"arch": None, "sizes": None},
    {"channels": [10**12]},
    {"channels": "16,32"},
    {"channels": [[16]]},
    {"channels": [16.5, 32]},
    {"channels": [True, 32]},
    {"channels": []},
    {"channels": [4] * 100},
    {"kernel": "3"},
    {"kernel": -1},
    {"kernel": 10**30},
    {"padding": 99},
    {"hidden": [10**9]},
    {"hidden": None},
    {"n_classes": 0},
    {"in_channels": 10**6},
    {"image_size": 10**6},
    {"image_size": 4},
    {"kernel": None},
    {"seed": "zero"},
    {"seed": 10**40},
    {"init": ["torch"]},
    {"channels": [4, 8]},  # valid sizes, but the tensors do not fit them
]


@pytest.mark.parametrize("change", HOSTILE, ids=[json.dumps(c)[:40] for c in HOSTILE])
def test_hostile_cnn_metadata_gives_a_clear_error(change):
    data = checkpoint_bytes(CNN(channels=(3, 5), hidden=(7,), seed=1))
    bad = _with_meta(data, **change)
    with pytest.raises(xwp.XWPError) as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "sizes", [[784, 10**6, 10], [10**9, 10], ["784", 10], [784, [10]], [784.0, 10], 7, [784, 4096, 4096, 4096, 10**4]]
)
def test_hostile_mlp_metadata(sizes):
    data = checkpoint_bytes(xwp.MLP((784, 8, 10)))
    with pytest.raises(xwp.XWPError):
        load_checkpoint(_with_meta(data, sizes=sizes))


def test_old_mlp_checkpoint_without_arch_still_loads():
    data = _with_meta(checkpoint_bytes(xwp.MLP((784, 8, 10), seed=4)), arch=None)
    ck = load_checkpoint(data)
    assert isinstance(ck.model, xwp.MLP) and ck.model.sizes == (784, 8, 10)


def test_build_model_round_trips_both_families():
    for m in (xwp.MLP((30, 5, 2)), CNN(channels=(2,), hidden=(), image_size=9, kernel=3)):
        other = build_model(m.arch(), seed=m.seed, init=m.init)
        assert type(other) is type(m) and other.arch() == m.arch()
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), other.parameters(), strict=True))


# ----------------------------------------------------------------------------- every method on a CNN


@pytest.fixture(scope="module")
def tiny_cnn():
    """A small CNN moved away from its initial state, and a few 28x28 images."""
    m = CNN(channels=(3, 4), kernel=3, hidden=(8,), seed=0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    return m.eval(), images(2, 1, 28, seed=4).float()


CHEAP = {"shapley": {"n_samples": 1}, "kernelshap": {"n_samples": 20}, "rise": {"n_masks": 50}, "ig": {"n_steps": 8}}
CHEAP["gradientshap"] = {"n_samples": 4}


@pytest.mark.parametrize("name", list(xwp.METHODS))
def test_every_registry_method_runs_on_a_cnn(tiny_cnn, name):
    model, x = tiny_cnn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attr = xwp.make_method(name, model, **CHEAP.get(name, {})).attribute(x, target=torch.tensor([1, 2]))
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    assert attr.abs().sum() > 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), "the model was modified"
    assert all(isinstance(m, nn.Module) and not m._forward_hooks for m in model.modules()), "hooks left behind"


def test_lrp_on_a_cnn_is_conservative(tiny_cnn):
    """LRP-epsilon with zero biases: the relevances sum to the target logit (rules exist for Conv2d and MaxPool2d)."""
    model, x = tiny_cnn
    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer in m.net:
            if isinstance(layer, nn.Linear | nn.Conv2d):
                layer.bias.zero_()
    attr = xwp.make_method("lrp", m).attribute(x, target=torch.tensor([1, 2]))
    logits = m(x).gather(1, torch.tensor([[1], [2]]))[:, 0]
    torch.testing.assert_close(attr.sum((1, 2, 3)), logits.detach(), rtol=1e-3, atol=1e-4)


def test_deeplift_on_a_cnn_is_complete(tiny_cnn):
    """DeepLIFT (rescale) sums to f(x) - f(baseline) on a CNN with max pooling."""
    model, x = tiny_cnn
    attr = xwp.make_method("deeplift", model).attribute(x, target=torch.tensor([1, 2]))
    with torch.no_grad():
        diff = (model(x) - model(torch.zeros_like(x))).gather(1, torch.tensor([[1], [2]]))[:, 0]
    torch.testing.assert_close(attr.sum((1, 2, 3)), diff, rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # a CNN evaluation: ~7 s
def test_evaluate_and_metrics_on_a_cnn(tiny_cnn):
    model, _ = tiny_cnn
    data = small_set()
    ev = xwp.evaluate(model, data, methods=["xwp", "xwpc", "occlusion", "random"], n=6, batch_size=4)
    assert list(dict.fromkeys(ev.table["method"])) == ["xwp", "xwpc", "occlusion", "random"]
    assert ev.table["deletion_auc_mean"].notna().all()
    x, t = data.images[:3], data.labels[:3]
    a = xwp.XWP(model).attribute(x, target=t)
    for fn in (xwp.deletion_auc, xwp.insertion_auc, xwp.average_drop):
        v = fn(model, x, t, a)
        assert v.shape == (3,) and torch.isfinite(v).all()


# ----------------------------------------------------------------------------- CLI


def test_cli_trains_a_cnn_and_explains_with_it(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    import xwp.data.datasets
    from xwp.cli.commands import main

    monkeypatch.setattr(xwp.data.datasets, "load_dataset", lambda name, split, data_dir=None: small_set(32))
    out = tmp_path / "cnn.safetensors"
    args = ["train", "--arch", "cnn", "--channels", "2,3", "--kernel", "5", "--hidden", "8", "--epochs", "1"]
    assert main([*args, "--out", str(out)]) == 0
    ck = load_checkpoint(out)
    assert isinstance(ck.model, CNN) and ck.model.channels == (2, 3) and ck.model.kernel == 5
    assert ck.meta["arch"] == "cnn" and ck.meta["hidden"] == [8]
    img = tmp_path / "bar.png"
    Image.fromarray(np.pad(np.full((4, 20), 255, np.uint8), 12)).save(img)
    npy = tmp_path / "maps.npy"
    assert (
        main(["explain", "--checkpoint", str(out), "--method", "xwp,xwpc", "--image", str(img), "--out", str(npy)]) == 0
    )
    assert np.load(npy).shape == (2, 1, 28, 28)
    assert main(["train", "--arch", "cnn", "--channels", "0", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "channels" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_conv_xwp_on_cuda_matches_cpu():
    model, model0 = conv_net(*SHAPES[2])
    x = images(3, 3, 8)
    for cls in (XWP, XWPc):
        cpu = cls(model, model0).attribute(x, target=1)
        gpu = cls(copy.deepcopy(model).cuda(), copy.deepcopy(model0).cuda()).attribute(x.cuda(), target=1)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-11)

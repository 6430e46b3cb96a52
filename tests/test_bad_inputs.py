"""The bad-input corpus (tests/corpus.py) through the core API and the CLI.

API: the expected XWPError (never another exception type), or a valid result.
CLI: one line ``error: ...`` on stderr, exit status 2, and no partial output files.
Every message is one line of at most 300 characters and never quotes a planted secret.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import xwp
from tests.support.corpus import CASES, MARKER, SECRET
from xwp.cli.commands import main
from xwp.data.datasets import image_to_input, load_image, read_tmnist_csv, tmnist_split
from xwp.errors import MAX_MESSAGE_CHARS
from xwp.safety import check_out_path

SUFFIXES = {"explain": (".png", ".npy"), "evaluate": (".csv",), "train": (".safetensors",)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, typeface):
    model = xwp.MLP((784, 32, 10), seed=0)
    xwp.train(model, typeface[0].sample(2000, seed=0), epochs=1, device="cpu")
    path = tmp_path_factory.mktemp("ck") / "ok.safetensors"
    xwp.save_checkpoint(path, model, {"dataset": "typeface", "classes": typeface[0].classes})
    return path


def test_corpus_has_at_least_15_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 100


def api_outcome(case, tmp_path, ckpt, typeface):
    made = case.make(tmp_path)
    if case.kind == "checkpoint":  # load it, then read its test set as explain --index does
        ck = xwp.load_checkpoint(made)
        xwp.load_dataset(ck.meta.get("dataset", "typeface"), "test")  # never with a folder named by the file
        return ck
    if case.kind == "image":
        return image_to_input(load_image(made))
    if case.kind == "canvas":
        return image_to_input(made, invert=False)
    if case.kind == "tmnist":
        return tmnist_split(*read_tmnist_csv(made), split="train")
    if case.kind == "datadir":
        return xwp.load_dataset("fashion-mnist", "test", made)
    if case.kind == "datapath":  # what the app does with a typed path (the allowed folder: tmp/allowed)
        from xwp.config import allowed_data_path

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("XWP_DATA_DIRS", str(tmp_path / "allowed"))
            return xwp.load_dataset(made["dataset"], "train", allowed_data_path(made["path"]))
    if case.kind == "outpath":
        return check_out_path(made["out"], SUFFIXES[made["cmd"]], force=made["cmd"] != "train")
    if case.kind == "args":
        if made["api"] is None:
            pytest.skip("a CLI-only case")
        return made["api"](ckpt, typeface)
    if case.kind == "train":
        hidden = xwp.models.parse_hidden(made.pop("hidden", "16"))
        model = xwp.MLP((784, *hidden, 10))
        return xwp.train(model, typeface[0].sample(64), device="cpu", **{"epochs": 1, **made})
    model = xwp.load_checkpoint(ckpt).model
    if case.kind == "explain":
        return xwp.XWP(model).attribute(typeface[1].images[:2], target=made["target"])
    if case.kind == "evaluate":
        return xwp.evaluate(model, typeface[1], ["xwp"], n=len(typeface[1]) + 1)
    raise AssertionError(case.kind)


def check_message(text: str) -> None:
    """One line, short, and no planted secret."""
    assert "\n" not in text and len(text) <= MAX_MESSAGE_CHARS + len("error: ") + 40, text[:400]
    assert SECRET not in text, text[:400]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api(case, tmp_path, ckpt, typeface):
    if case.expect is None:
        out = api_outcome(case, tmp_path, ckpt, typeface)
        if case.kind == "checkpoint":
            assert isinstance(out, xwp.Checkpoint) and "data_dir" not in out.meta
        elif case.kind == "datapath":
            assert isinstance(out, xwp.ImageSet) and len(out) > 0 and out.info["file"].startswith(str(tmp_path))
        elif case.kind == "outpath":
            assert out.name in ("X.NPY", "X.PNG") and not out.exists()  # checked, nothing written yet
        else:
            assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 28, 28) and out.max() > 0.5
            column = out[0, 0].sum(0)  # every valid image is a vertical bar: ink in the middle columns
            assert float(column[10:18].sum()) > 0.8 * float(column.sum())
        return
    with pytest.raises(xwp.XWPError) as info:
        api_outcome(case, tmp_path, ckpt, typeface)
    assert re.search(case.expect, str(info.value)), str(info.value)[:400]
    check_message(str(info.value))
    assert not (tmp_path / MARKER).exists()  # nothing from a file ever runs


def cli_args(case, tmp_path, ckpt):
    made = case.make(tmp_path)
    out = str(tmp_path / "out.png")
    explain = ["explain", "--checkpoint", str(ckpt), "--method", "xwp"]
    if case.kind == "checkpoint":
        return ["explain", "--checkpoint", str(made), "--method", "xwp", "--index", "0", "--out", out]
    if case.kind == "image":
        return [*explain, "--image", str(made), "--out", out]
    if case.kind == "tmnist":
        return [
            "train",
            "--dataset",
            "tmnist",
            "--data-dir",
            str(made),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
    if case.kind == "datadir":  # the test split is read (and checked) before anything else
        return [*explain, "--index", "0", "--dataset", "fashion-mnist", "--data-dir", str(made), "--out", out]
    if case.kind == "outpath":
        if made["cmd"] == "explain":
            return [*explain, "--index", "0", "--out", made["out"]]
        if made["cmd"] == "evaluate":
            return ["evaluate", "--checkpoint", str(ckpt), "--methods", "xwp", "--n", "4", "--out", made["out"]]
        return ["train", "--hidden", "8", "--epochs", "1", "--out", made["out"]]
    if case.kind == "args":
        return [a.replace("{ckpt}", str(ckpt)) for a in made["cli"]]
    if case.kind == "train":
        return [
            "train",
            "--dataset",
            "typeface",
            "--epochs",
            str(made.get("epochs", 1)),
            "--lr",
            str(made.get("lr", 0.001)),
            "--hidden",
            made.get("hidden", "16"),
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
    if case.kind == "explain":
        return [*explain, "--index", "0", "--target", str(made["target"]), "--out", out]
    if case.kind == "evaluate":
        return [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--dataset",
            "typeface",
            "--methods",
            "xwp",
            "--n",
            str(made["n"]),
            "--out",
            str(tmp_path / "t.csv"),
        ]
    return None


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.kind != "canvas"], ids=[c.id for c in CASES if c.kind != "canvas"]
)
def test_cli(case, tmp_path, ckpt, capsys):
    if case.kind == "datapath":
        pytest.skip("the CLI's user is the operator, whose paths are not restricted")
    args = cli_args(case, tmp_path, ckpt)
    before = {p.name for p in tmp_path.iterdir()}
    code = main(args)
    captured = capsys.readouterr()
    after = {p.name for p in tmp_path.iterdir()}
    if case.expect is None:
        assert code == 0, captured.err
        new = after - before
        if case.kind == "outpath":
            written = args[args.index("--out") + 1]
            assert new == {written.rsplit("/", 1)[-1]}  # X.NPY stays X.NPY (no X.NPY.npy)
            data = (tmp_path / written.rsplit("/", 1)[-1]).read_bytes()
            if written.lower().endswith(".npy"):
                assert np.load(tmp_path / written.rsplit("/", 1)[-1]).shape[-2:] == (28, 28)
            else:
                assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert new == {"out.png"}
        assert not [n for n in after if n.endswith(".tmp")]
        return
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), captured.err
    assert re.search(case.expect, err[0]), err[0]
    check_message(err[0])
    assert after == before  # no partial files
    assert not (tmp_path / MARKER).exists()


# --------------------------------------------------------------------------- hostile input: the Python API


def _bad_inputs():
    x = torch.rand(2, 1, 28, 28)
    nan = x.clone()
    nan[0, 0, 3, 3] = float("nan")
    return [
        ("numpy", x.numpy(), "must be a tensor"),
        ("no-batch", torch.rand(784), "batch dimension"),
        ("empty-batch", torch.rand(0, 1, 28, 28), "batch is empty"),
        ("uint8", (x * 255).to(torch.uint8), "floating point"),
        ("bool", x > 0.5, "floating point"),
        ("wrong-size", torch.rand(2, 1, 32, 32), "784 features"),
        ("nan", nan, "NaN or infinite"),
        ("inf", x.masked_fill(x > 0.99, float("inf")), "NaN or infinite"),
    ]


@pytest.mark.parametrize("method", ["xwp", "xwpc", "saliency", "rise"])
@pytest.mark.parametrize("bad", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_api_refuses_bad_inputs(method, bad):
    from xwp.attribution import make_method

    model = xwp.MLP((784, 16, 10), seed=0).eval()
    with pytest.raises(xwp.XWPError, match=bad[2]):
        make_method(method, model, model.initial_model()).attribute(bad[1], target=1)


def test_train_mode_with_dropout_is_refused_and_mlp_train_mode_is_the_same():
    import copy

    from torch import nn

    x = torch.rand(2, 1, 28, 28)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10)).train()
    with pytest.raises(xwp.XWPError, match="model.eval"):
        xwp.XWP(seq, initial_model=copy.deepcopy(seq)).attribute(x, target=1)
    mlp = xwp.MLP((784, 16, 10), seed=0)
    a = xwp.XWP(mlp.train()).attribute(x, target=1)
    b = xwp.XWP(mlp.eval()).attribute(x, target=1)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["shapley", "kernelshap", "gradientshap"])
def test_seeded_captum_maps_do_not_depend_on_other_threads(name):
    """Four threads with two seeds at once give exactly the maps of sequential calls."""
    import threading

    from xwp.attribution import make_method

    model = xwp.MLP((784, 16, 10), seed=0).eval()
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    opts = {"shapley": {"n_samples": 2, "superpixel": 4}, "kernelshap": {"n_samples": 40}}.get(name, {})
    method = make_method(name, model, model.initial_model())
    ref = {s: method.attribute(x, target=3, seed=s, **opts) for s in (0, 1)}
    got, errors = {}, []

    def work(k):
        try:
            got[k] = method.attribute(x, target=3, seed=k % 2, **opts)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not torch.equal(ref[0], ref[1])  # the seed matters ...
    for k, a in got.items():
        assert torch.equal(a, ref[k % 2])  # ... and only the seed


def _api_calls():
    import numpy as _np

    mlp = lambda: xwp.MLP((784, 8, 10), seed=0)  # noqa: E731
    return [
        ("dataset-name-number", lambda t: xwp.load_dataset(5), "dataset name must be a text"),
        ("dataset-split-x", lambda t: xwp.load_dataset("digits", "x"), "split must be"),
        ("dataset-seed-2**64", lambda t: xwp.load_dataset("digits", seed=2**64), "seed must be"),
        ("dataset-seed-float", lambda t: xwp.load_dataset("digits", seed=0.5), "seed must be"),
        ("dataset-dir-number", lambda t: xwp.load_dataset("tmnist", data_dir=5), "data_dir must be a path"),
        ("mlp-float-size", lambda t: xwp.MLP((784.5, 10)), "whole numbers"),
        ("mlp-text-sizes", lambda t: xwp.MLP("784,10"), "whole numbers"),
        ("mlp-none-sizes", lambda t: xwp.MLP(None), "list of whole numbers"),
        ("mlp-init", lambda t: xwp.MLP((784, 10), init="x"), "init must be"),
        ("train-on-a-list", lambda t: xwp.train(mlp(), [1, 2]), "ImageSet"),
        ("train-seed-text", lambda t: xwp.train(mlp(), t[0].sample(8), seed="1", device="cpu"), "seed must be"),
        ("evaluate-n-float", lambda t: xwp.evaluate(mlp(), t[1], ["xwp"], n=2.5), "whole number"),
        ("evaluate-methods-text", lambda t: xwp.evaluate(mlp(), t[1], "xwp", n=2), "list of names"),
        ("checkpoint-number", lambda t: xwp.load_checkpoint(5), "path or bytes"),
        ("save-not-mlp", lambda t: xwp.save_checkpoint("x.safetensors", torch.nn.Linear(2, 2)), "xwp.MLP"),
        ("target-float", lambda t: xwp.XWP(mlp()).attribute(torch.rand(1, 784), target=1.5), "target|integer"),
        ("numpy-seed-ok", lambda t: xwp.MLP((784, 10), seed=_np.int64(3)).seed == 3, None),
    ]


@pytest.mark.parametrize("call", _api_calls(), ids=[c[0] for c in _api_calls()])
def test_api_bad_arguments_are_xwp_errors(call, typeface):
    _, fn, expect = call
    if expect is None:
        assert fn(typeface)
        return
    with pytest.raises(xwp.XWPError, match=expect) as info:
        fn(typeface)
    check_message(str(info.value))

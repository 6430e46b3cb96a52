"""The bad-input corpus (tests/corpus.py) through the core API and the CLI.

API: the expected XWPError (never another exception type), or a valid result.
CLI: one line ``error: ...`` on stderr, exit status 2, and no partial output files.
"""

from __future__ import annotations

import re

import pytest
import torch
from corpus import CASES, MARKER

import xwp
from xwp.cli import main
from xwp.data import image_to_input, load_image, read_tmnist_csv


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, typeface):
    model = xwp.MLP((784, 32, 10), seed=0)
    xwp.train(model, typeface[0].sample(2000, seed=0), epochs=1, device="cpu")
    path = tmp_path_factory.mktemp("ck") / "ok.safetensors"
    xwp.save_checkpoint(path, model, {"dataset": "typeface", "classes": typeface[0].classes})
    return path


def test_corpus_has_at_least_15_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 15


def api_outcome(case, tmp_path, ckpt, typeface):
    made = case.make(tmp_path)
    if case.kind == "checkpoint":
        return xwp.load_checkpoint(made)
    if case.kind == "image":
        return image_to_input(load_image(made))
    if case.kind == "canvas":
        return image_to_input(made, invert=False)
    if case.kind == "tmnist":
        return read_tmnist_csv(made)
    if case.kind == "datadir":
        return xwp.load_dataset("fashion-mnist", "test", made)
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


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api(case, tmp_path, ckpt, typeface):
    if case.expect is None:
        out = api_outcome(case, tmp_path, ckpt, typeface)
        assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 28, 28) and out.max() > 0.5
        return
    with pytest.raises(xwp.XWPError) as info:
        api_outcome(case, tmp_path, ckpt, typeface)
    assert re.search(case.expect, str(info.value)), str(info.value)
    assert not (tmp_path / MARKER).exists()  # nothing from a file ever runs


def cli_args(case, tmp_path, ckpt):
    made = case.make(tmp_path)
    out = str(tmp_path / "out.png")
    if case.kind == "checkpoint":
        return ["explain", "--checkpoint", str(made), "--method", "xwp", "--index", "0", "--out", out]
    if case.kind == "image":
        return ["explain", "--checkpoint", str(ckpt), "--method", "xwp", "--image", str(made), "--out", out]
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
    if case.kind == "datadir":
        return [
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(made),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
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
        return [
            "explain",
            "--checkpoint",
            str(ckpt),
            "--method",
            "xwp",
            "--index",
            "0",
            "--target",
            str(made["target"]),
            "--out",
            out,
        ]
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
    args = cli_args(case, tmp_path, ckpt)
    before = {p.name for p in tmp_path.iterdir()}
    code = main(args)
    captured = capsys.readouterr()
    after = {p.name for p in tmp_path.iterdir()}
    if case.expect is None:
        assert code == 0, captured.err
        assert "out.png" in after
        return
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), captured.err
    assert re.search(case.expect, err[0]), err[0]
    assert after == before  # no partial files
    assert not (tmp_path / MARKER).exists()

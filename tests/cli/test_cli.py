"""The CLI end to end on the built-in typeface digits, and its one-line errors."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xwp.cli.commands import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    """``python -m xwp ARGS`` in this process (a subprocess would add seconds of imports and test nothing more).

    :func:`test_python_dash_m_xwp_runs_in_a_fresh_interpreter` runs the real entry point once.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:  # argparse's errors and --help
            code = stop.code if isinstance(stop.code, int) else 1
    return subprocess.CompletedProcess(["xwp", *args], code, out.getvalue(), err.getvalue())


def test_python_dash_m_xwp_runs_in_a_fresh_interpreter(tmp_path):
    missing = str(tmp_path / "missing.safetensors")
    r = subprocess.run(
        [sys.executable, "-m", "xwp", "explain", "--checkpoint", missing, "--out", str(tmp_path / "x.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "typeface.safetensors"
    r = run("train", "--dataset", "typeface", "--epochs", "3", "--hidden", "128,64", "--seed", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and out.exists()
    return out


@pytest.mark.slow  # three methods, two files: ~10 s
def test_explain_png_and_npy(checkpoint, tmp_path):
    png = tmp_path / "maps.png"
    r = run("explain", "--checkpoint", str(checkpoint), "--method", "xwp,xwpc,ig", "--index", "5", "--out", str(png))
    assert r.returncode == 0, r.stderr
    im = Image.open(png)
    assert im.size[0] > 400 and im.size[1] > 150
    npy = tmp_path / "maps.npy"
    r = run("explain", "--checkpoint", str(checkpoint), "--method", "xwp,xwpc", "--index", "5", "--out", str(npy))
    assert r.returncode == 0, r.stderr
    arr = np.load(npy)
    assert arr.shape == (2, 1, 28, 28) and np.abs(arr).sum() > 0


def test_explain_an_image_file(checkpoint, tmp_path):
    img = Image.new("L", (200, 200), 255)
    from PIL import ImageDraw

    ImageDraw.Draw(img).line([(100, 30), (100, 170)], fill=0, width=14)  # a dark "1" on white paper
    src = tmp_path / "one.png"
    img.save(src)
    out = tmp_path / "one.npy"
    r = run("explain", "--checkpoint", str(checkpoint), "--method", "xwp", "--image", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert np.load(out).shape == (1, 1, 28, 28)


@pytest.mark.slow  # a full evaluate run: ~11 s
def test_evaluate_writes_the_table(checkpoint, tmp_path):
    out = tmp_path / "table.csv"
    curves = tmp_path / "curves.png"
    r = run(
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "typeface",
        "--methods",
        "xwp,xwpc,random",
        "--n",
        "20",
        "--removal",
        "zero,mean",
        "--output",
        "softmax,logits",
        "--sensitivity-samples",
        "2",
        "--out",
        str(out),
        "--curves",
        str(curves),
    )
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["method", "output", "removal"]
    assert len(table) == 3 * 2 * 2
    metrics = ["deletion_auc", "insertion_auc", "srg", "average_drop", "faithfulness_correlation", "max_sensitivity"]
    for m in metrics:
        for suffix in ("mean", "median", "ci_low", "ci_high"):
            assert table[f"{m}_{suffix}"].notna().all(), f"{m}_{suffix}"
    rows = table.set_index(["method", "output", "removal"])
    assert (
        rows.loc[("xwp", "softmax", "zero"), "deletion_auc_mean"]
        < rows.loc[("random", "softmax", "zero"), "deletion_auc_mean"]
    )
    assert curves.exists() and "Deletion AUC" in r.stdout and "significant differences" in r.stdout
    only = tmp_path / "correct.csv"
    r = run("evaluate", "--checkpoint", str(checkpoint), "--methods", "xwp", "--n", "20", "--output", "softmax")
    assert r.returncode == 2  # --out is required
    r = run(
        "evaluate", "--checkpoint", str(checkpoint), "--methods", "xwp", "--n", "20", "--output", "softmax,log-odds",
        "--sensitivity-samples", "0", "--correct-only", "--out", str(only),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    n_correct = pd.read_csv(only)["n"].iloc[0]
    assert 0 < n_correct <= 20 and list(pd.read_csv(only)["output"]) == ["softmax", "log-odds"]


def test_sanity_writes_one_row_per_method_and_layer(checkpoint, tmp_path):
    out = tmp_path / "sanity.csv"
    r = run("sanity", "--checkpoint", str(checkpoint), "--methods", "xwp,random", "--n", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out)
    assert {"method", "layer", "spearman_all", "spearman_nonzero", "passed"} <= set(table.columns)
    assert len(table) == 2 * 3  # 128,64 hidden: three Linear layers, randomised top-down
    assert table.groupby("method").size().to_dict() == {"random": 3, "xwp": 3}


@pytest.mark.parametrize(
    "args,message",
    [
        (
            [
                "explain",
                "--checkpoint",
                "/nonexistent.safetensors",
                "--method",
                "xwp",
                "--index",
                "0",
                "--out",
                "x.png",
            ],
            "does not exist",
        ),
        (
            ["explain", "--checkpoint", "{ckpt}", "--method", "gradcam", "--index", "0", "--out", "{tmp}/x.png"],
            "unknown method",
        ),
        (
            ["explain", "--checkpoint", "{ckpt}", "--method", "xwp", "--index", "999999", "--out", "{tmp}/x.png"],
            "--index must be",
        ),
        (
            [
                "explain",
                "--checkpoint",
                "{ckpt}",
                "--method",
                "xwp",
                "--index",
                "0",
                "--target",
                "12",
                "--out",
                "{tmp}/x.png",
            ],
            "--target must be",
        ),
        (
            ["explain", "--checkpoint", "{ckpt}", "--method", "xwp", "--index", "0", "--out", "{tmp}/x.jpg"],
            "--out must end",
        ),
        (
            [
                "explain",
                "--checkpoint",
                "{ckpt}",
                "--method",
                "xwp",
                "--image",
                "{tmp}/fake.png",
                "--out",
                "{tmp}/x.png",
            ],
            "not a readable image",
        ),
        (
            ["explain", "--checkpoint", "{tmp}/fake.png", "--method", "xwp", "--index", "0", "--out", "{tmp}/x.png"],
            "not an xwp checkpoint",
        ),
        (["train", "--dataset", "typeface", "--epochs", "0", "--out", "{tmp}/m.safetensors"], "epochs"),
        (["train", "--dataset", "typeface", "--hidden", "0", "--out", "{tmp}/m.safetensors"], "at least 1"),
        (["train", "--dataset", "typeface", "--hidden", "100000", "--out", "{tmp}/m.safetensors"], "limited"),
        (["train", "--dataset", "tmnist", "--out", "{tmp}/m.safetensors"], "TMNIST_Data.csv"),
        (["train", "--dataset", "typeface", "--out", "{tmp}/missing/m.safetensors"], "does not exist"),
        (
            ["evaluate", "--checkpoint", "{ckpt}", "--methods", "xwp", "--n", "1000000", "--out", "{tmp}/t.csv"],
            "limited",
        ),
        (
            ["evaluate", "--checkpoint", "{ckpt}", "--removal", "zero,fog", "--out", "{tmp}/t.csv"],
            "unknown removal(s) fog",
        ),
        (
            ["evaluate", "--checkpoint", "{ckpt}", "--output", "probs", "--out", "{tmp}/t.csv"],
            "unknown output(s) probs",
        ),
        (["sanity", "--checkpoint", "{ckpt}", "--n", "0", "--out", "{tmp}/s.csv"], "--n must be between"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(args, message, checkpoint, tmp_path, capsys):
    (tmp_path / "fake.png").write_text("not a png")
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not list(tmp_path.glob("m.safetensors")) and not list(tmp_path.glob("x.png"))


# --------------------------------------------------------------------------- hostile input


def test_full_disk_leaves_no_truncated_file(checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "maps.npy"

    def half_then_fail(fh, arr, *a, **k):
        fh.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", half_then_fail)
    code = main(["explain", "--checkpoint", str(checkpoint), "--index", "0", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: cannot write {out}: No space left on device"]
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary


def test_train_force_overwrites_and_warns_when_diverged(tmp_path, monkeypatch, capsys):
    from xwp.train import History

    out = tmp_path / "m.safetensors"
    out.write_bytes(b"old")
    args = ["train", "--hidden", "8", "--epochs", "1", "--out", str(out)]
    assert main(args) == 2 and "pass --force" in capsys.readouterr().err and out.read_bytes() == b"old"
    monkeypatch.setattr(History, "diverging", property(lambda self: True))
    assert main([*args, "--force"]) == 0
    err = capsys.readouterr().err
    assert "warning: training diverged" in err and out.read_bytes()[:8] != b"old"


def test_evaluate_defaults_to_the_checkpoints_dataset_and_counts_each_method_once(tmp_path, monkeypatch, capsys):
    import xwp
    import xwp.data.datasets

    model = xwp.MLP((784, 8, 10), seed=0)
    ck = xwp.save_checkpoint(tmp_path / "d.safetensors", model, {"dataset": "digits"})
    seen = []
    real = xwp.data.datasets.load_dataset
    fake = lambda name, *a, **k: seen.append(name) or real(name, *a, **k)  # noqa: E731
    monkeypatch.setattr(xwp.data.datasets, "load_dataset", fake)
    out = tmp_path / "t.csv"
    assert main(["evaluate", "--checkpoint", str(ck), "--methods", "xwp,xwp", "--n", "5", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert seen == ["digits"] and list(table["method"]) == ["xwp", "xwp"] and list(table["n"]) == [5, 5]
    assert list(table["output"]) == ["softmax", "logits"]  # one row per output space, xwp counted once in each


def test_study_default_out_is_not_the_committed_results():
    from xwp.cli.commands import build_parser

    args = build_parser().parse_args(["study"])
    assert args.out == "study-out" and not args.force


def test_study_arch_reaches_the_study(tmp_path, monkeypatch, capsys):
    """``study --arch mlp,cnn --channels --kernel``: the families, the CNN's sizes and the default method set."""
    import xwp.study.run

    seen = {}

    def fake(datasets, seeds, **kw):
        seen.update(kw, datasets=datasets, seeds=seeds)
        return xwp.study.run.StudyResult(pd.DataFrame(), pd.DataFrame(columns=["dataset", "method"]), [])

    monkeypatch.setattr(xwp.study.run, "run_study", fake)
    argv = ["study", "--datasets", "typeface", "--arch", "mlp, cnn", "--channels", "8,16", "--kernel", "5"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert seen["archs"] == ["mlp", "cnn"] and seen["channels"] == (8, 16) and seen["kernel"] == 5
    assert seen["methods"] is None  # the registry's study set, ad-occlusion added for the CNN by the study
    assert main(["study", "--datasets", "typeface", "--out", str(tmp_path / "b")]) == 0
    assert seen["archs"] == ["mlp"]
    assert main(["study", "--datasets", "typeface", "--methods", "xwp", "--out", str(tmp_path / "c")]) == 0
    assert seen["methods"] == ["xwp"]
    capsys.readouterr()
    assert main(["study", "--datasets", "typeface", "--arch", "vit", "--out", str(tmp_path / "d")]) == 2
    assert "unknown architecture(s) vit; choose from mlp, cnn" in capsys.readouterr().err
    assert main(["study", "--datasets", "typeface", "--channels", "8,x", "--out", str(tmp_path / "e")]) == 2
    assert "CNN channels must be whole numbers" in capsys.readouterr().err


def test_help_of_every_command_prints(capsys):
    # argparse %-formats help strings: a bare "95%" in one made `python -m xwp --help` crash
    assert main(["--help"]) == 0
    for command in ("train", "explain", "evaluate", "sanity", "study"):
        assert main([command, "--help"]) == 0
    assert "95 % intervals" in capsys.readouterr().out

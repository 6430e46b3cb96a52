"""The bad-input corpus: each kind of hostile or broken input with its exact expected outcome.

Every entry builds its input in a temporary folder. ``expect`` is a regular expression
the one-line error must match, or ``None`` where the input is odd but valid and must work.
tests/test_bad_inputs.py runs the corpus through the core API and the CLI; the app tests
feed the upload entries to the app.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Case:
    """One corpus entry."""

    id: str
    kind: str  # checkpoint | image | canvas | tmnist | datadir | train | explain | evaluate
    make: Callable[[Path], object]
    expect: str | None


MARKER = "xwp-corpus-pwned"


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _ckpt_bytes(drop_initial=False, other_shape=False) -> bytes:
    import json

    from safetensors.torch import load, save

    import xwp
    from xwp.checkpoint import checkpoint_bytes

    data = checkpoint_bytes(xwp.MLP((784, 16, 10), seed=0), {"dataset": "typeface"})
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = load(data)
    if drop_initial:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("initial.")}
    if other_shape:
        tensors["trained.2.weight"] = torch.zeros(7, 16)
    return save(tensors, metadata=meta)


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _png(mode: str, size=(96, 96)) -> bytes:
    if mode == "I;16":
        arr = np.zeros(size[::-1], dtype=np.uint16)
        arr[15:80, 44:54] = 65000
        im = Image.fromarray(arr)
    else:
        im = Image.new(mode, size, 0)
        if mode == "P":
            im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        fill = {"L": 255, "P": 1, "RGBA": (255, 255, 255, 255)}[mode]
        if mode == "RGBA":
            im = Image.new("RGBA", size, (0, 0, 0, 0))
        ImageDraw.Draw(im).line([(48, 12), (48, 84)], fill=fill, width=10)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, format="PNG")  # 1-bit: a few kB on disk, 100 Mpixel
    return buf.getvalue()


def _canvas(dot: bool) -> np.ndarray:
    arr = np.zeros((280, 280), dtype=np.float32)
    if dot:
        arr[130:142, 130:142] = 1.0  # one click of an 18 px brush, roughly
    return arr


def tmnist_csv(n_fonts=10, extra=None, drop=None, bad_cell=False) -> bytes:
    """A small TMNIST CSV in Kaggle's layout (one bar-shaped digit per font and class), optionally broken."""
    rng = np.random.default_rng(0)
    rows = []
    header = ["names", "labels"] + [str(i) for i in range(1, 785)]
    for f in range(n_fonts):
        for d in range(10):
            img = np.zeros((28, 28), dtype=int)
            img[6:22, 10 + d % 5 : 14 + d % 5] = rng.integers(100, 256)
            rows.append([f"Font{f}-Regular", str(d)] + [str(v) for v in img.ravel()])
    if bad_cell:
        rows[5][300] = "abc"
    if drop:
        i = header.index(drop)
        header.pop(i)
        rows = [r[:i] + r[i + 1 :] for r in rows]
    if extra:
        header.append(extra)
        rows = [r + ["0"] for r in rows]
    return ("\n".join(",".join(r) for r in [header] + rows) + "\n").encode()


def _datadir(tmp: Path, corrupt: bool) -> Path:
    raw = tmp / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    if corrupt:
        for name in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ):
            (raw / f"{name}.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    else:
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    return tmp / "data"


CASES = [
    Case(
        "pickle-runs-code",
        "checkpoint",
        lambda t: _write(t, "evil.safetensors", pickle.dumps({"w": _Exploit(t / MARKER)})),
        "pickle",
    ),
    Case(
        "truncated-checkpoint", "checkpoint", lambda t: _write(t, "cut.safetensors", _ckpt_bytes()[:5000]), "truncated"
    ),
    Case(
        "other-architecture",
        "checkpoint",
        lambda t: _write(t, "other.safetensors", _ckpt_bytes(other_shape=True)),
        "shape",
    ),
    Case(
        "no-initial-state",
        "checkpoint",
        lambda t: _write(t, "noinit.safetensors", _ckpt_bytes(drop_initial=True)),
        "initial state",
    ),
    Case(
        "random-binary",
        "checkpoint",
        lambda t: _write(t, "random.safetensors", os.urandom(20000)),
        "not an xwp checkpoint",
    ),
    Case("rgba-png", "image", lambda t: _write(t, "rgba.png", _png("RGBA")), None),
    Case("16-bit-png", "image", lambda t: _write(t, "deep.png", _png("I;16")), None),
    Case("palette-png", "image", lambda t: _write(t, "palette.png", _png("P")), None),
    Case("1x1-png", "image", lambda t: _write(t, "tiny.png", _png("L", (1, 1))), "at least 8 pixels"),
    Case("decompression-bomb", "image", lambda t: _write(t, "bomb.png", _bomb()), "limit"),
    Case(
        "text-named-png",
        "image",
        lambda t: _write(t, "fake.png", b"hello, I am not a picture\n" * 10),
        "not a readable image",
    ),
    Case("blank-canvas", "canvas", lambda t: _canvas(dot=False), "blank"),
    Case("one-dot-canvas", "canvas", lambda t: _canvas(dot=True), "too small"),
    Case(
        "tmnist-missing-column",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", tmnist_csv(3, drop="17")),
        "lacks 1 of the 784",
    ),
    Case(
        "tmnist-extra-column",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", tmnist_csv(3, extra="comment")),
        "unexpected column",
    ),
    Case(
        "tmnist-non-numeric",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", tmnist_csv(3, bad_cell=True)),
        "non-numeric",
    ),
    Case("idx-files-missing", "datadir", lambda t: _datadir(t, corrupt=False), "lacks"),
    Case("idx-files-corrupt", "datadir", lambda t: _datadir(t, corrupt=True), "damaged"),
    Case("nan-learning-rate", "train", lambda t: {"lr": float("nan")}, "learning rate"),
    Case("huge-learning-rate", "train", lambda t: {"lr": 1e9}, "learning rate"),
    Case("zero-epochs", "train", lambda t: {"epochs": 0}, "epochs"),
    Case("hidden-0", "train", lambda t: {"hidden": "0"}, "at least 1"),
    Case("hidden-100000", "train", lambda t: {"hidden": "100000"}, "limited"),
    Case("target-out-of-range", "explain", lambda t: {"target": 10}, "out of range|must be in"),
    Case("n-larger-than-dataset", "evaluate", lambda t: {"n": 10**4 - 1}, "n must be between"),
]

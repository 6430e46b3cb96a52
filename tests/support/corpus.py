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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Case:
    """One corpus entry."""

    id: str
    kind: str  # checkpoint | image | canvas | tmnist | datadir | datapath | train | explain | evaluate | outpath | args
    make: Callable[[Path], object]
    expect: str | None
    app: bool = True  # False: no app widget can deliver it (a FIFO), or the app's outcome differs (see below)


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


# --------------------------------------------------------------------------- hostile checkpoints

SECRET = "SECRETVALUE-must-never-be-echoed"
"""Planted in hostile files; no error message may ever contain it."""


def _raw_checkpoint(header: dict | list | str, payload: bytes = b"") -> bytes:
    """A safetensors-like file with an arbitrary JSON header (what safetensors itself would not write)."""
    import json

    text = header if isinstance(header, str) else json.dumps(header)
    blob = text.encode()
    return struct.pack("<Q", len(blob)) + blob + payload


def _forged(meta=None, info=None, tensors=None, sizes=(784, 16, 10), dtype=None) -> bytes:
    """A checkpoint with chosen metadata, header fields or tensors (the rest valid)."""
    import json

    from safetensors.torch import save

    import xwp

    model = xwp.MLP(sizes if sizes[0] == 784 and sizes[-1] <= 1000 else (784, 16, 10), seed=0)
    state = {}
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        for prefix in ("trained.", "initial."):
            state[f"{prefix}{2 * k}.weight"] = torch.zeros(n_out, n_in)
            state[f"{prefix}{2 * k}.bias"] = torch.zeros(n_out)
    if sizes == tuple(model.sizes):
        for k, v in model.net.state_dict().items():
            state[f"trained.{k}"] = v.clone()
            state[f"initial.{k}"] = v.clone()
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    state.update(tensors or {})
    body = {"sizes": list(sizes), "init": "torch", "seed": 0, "dataset": "typeface"}
    body.update(meta or {})
    header = {"format": "xwp-checkpoint", "version": "1", "meta": json.dumps(body)}
    header.update(info or {})
    return save(state, metadata=header)


def _nested(depth: int) -> str:
    return '{"sizes": [784, 16, 10], "x": ' + "[" * depth + "]" * depth + "}"


def _ck(name: str, data_fn: Callable[[], bytes]) -> Callable[[Path], Path]:
    return lambda t: _write(t, name, data_fn())


_NAN = {"trained.0.weight": torch.full((16, 784), float("nan"))}

CASES += [
    Case("ckpt-empty-file", "checkpoint", _ck("e.safetensors", lambda: b""), "empty or truncated"),
    Case(
        "ckpt-metadata-is-a-list",
        "checkpoint",
        _ck("m.safetensors", lambda: _raw_checkpoint({"__metadata__": ["format", "xwp-checkpoint"]})),
        "__metadata__ is not a JSON object",
    ),
    Case(
        "ckpt-metadata-is-a-string",
        "checkpoint",
        _ck("m.safetensors", lambda: _raw_checkpoint({"__metadata__": SECRET})),
        "__metadata__ is not a JSON object",
    ),
    Case(
        "ckpt-header-is-a-list",
        "checkpoint",
        _ck("m.safetensors", lambda: _raw_checkpoint([1, 2, SECRET])),
        "header is not a JSON table",
    ),
    Case(
        "ckpt-header-deeply-nested",
        "checkpoint",
        _ck("m.safetensors", lambda: _raw_checkpoint('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")),
        "not an xwp checkpoint",
    ),
    Case(
        "ckpt-bad-data-offsets",
        "checkpoint",
        _ck(
            "m.safetensors",
            lambda: _raw_checkpoint({"t": {"dtype": "F32", "shape": [1], "data_offsets": ["a", SECRET]}}),
        ),
        "malformed tensor table",
    ),
    Case(
        "ckpt-no-format", "checkpoint", _ck("m.safetensors", lambda: _forged(info={"format": "x"})), "no xwp metadata"
    ),
    Case("ckpt-future-version", "checkpoint", _ck("m.safetensors", lambda: _forged(info={"version": "9"})), "version"),
    Case("ckpt-meta-not-json", "checkpoint", _ck("m.safetensors", lambda: _forged(info={"meta": "{"})), "valid JSON"),
    Case("ckpt-meta-is-a-list", "checkpoint", _ck("m.safetensors", lambda: _forged(info={"meta": "[1, 2]"})), "object"),
    Case(
        "ckpt-meta-deeply-nested",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(info={"meta": _nested(100_000)})),
        "valid JSON|nested",
    ),
    Case(
        "ckpt-meta-nested-40",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(info={"meta": _nested(40)})),
        "nested more than 16",
    ),
    Case(
        "ckpt-meta-2mb",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"note": SECRET * 70_000})),
        "metadata is larger than",
    ),
    Case(
        "ckpt-float8-weights", "checkpoint", _ck("m.safetensors", lambda: _forged(dtype=torch.float8_e4m3fn)), "dtype"
    ),
    Case("ckpt-int-weights", "checkpoint", _ck("m.safetensors", lambda: _forged(dtype=torch.int32)), "dtype"),
    Case("ckpt-nan-weights", "checkpoint", _ck("m.safetensors", lambda: _forged(tensors=_NAN)), "NaN or infinite"),
    Case(
        "ckpt-extra-tensor",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(tensors={"payload": torch.zeros(10)})),
        "unexpected tensor",
    ),
    Case("ckpt-seed-abc", "checkpoint", _ck("m.safetensors", lambda: _forged(meta={"seed": "abc"})), "seed"),
    Case("ckpt-seed-2**70", "checkpoint", _ck("m.safetensors", lambda: _forged(meta={"seed": 2**70})), "seed"),
    Case("ckpt-seed-float", "checkpoint", _ck("m.safetensors", lambda: _forged(meta={"seed": 1.5})), "seed"),
    Case("ckpt-init-unknown", "checkpoint", _ck("m.safetensors", lambda: _forged(meta={"init": SECRET})), "init"),
    Case("ckpt-dataset-number", "checkpoint", _ck("m.safetensors", lambda: _forged(meta={"dataset": 5})), "dataset"),
    Case(
        "ckpt-input-size-100",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(sizes=(100, 16, 10))),
        "input size is 100",
    ),
    Case(
        "ckpt-50000-classes",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(sizes=(784, 2, 50_000))),
        "50000 classes; the limit is 1000",
    ),
    Case(
        "ckpt-sizes-floats",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"sizes": [784.0, 16, 10]})),
        "layer sizes",
    ),
    Case("ckpt-no-sizes", "checkpoint", _ck("m.safetensors", lambda: _forged(meta={"sizes": None})), "layer sizes"),
    Case(
        "ckpt-width-100000",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"sizes": [784, 100_000, 10]})),
        "limited to 4096",
    ),
    Case(
        "ckpt-20-hidden-layers",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"sizes": [784] + [4] * 20 + [10]})),
        "at most 8 hidden",
    ),
    Case(
        "ckpt-classes-mismatch",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"classes": ["a", "b"]})),
        "names 2 classes",
    ),
    Case(
        "ckpt-classes-not-text",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"classes": list(range(10))})),
        "class names",
    ),
    # metadata never selects a server path: data_dir is dropped, so this checkpoint is
    # valid through the API and the CLI (explain uses its own data, never /proc/self/environ);
    # in the app it loads, and its test images come from the operator's folders (app side)
    Case(
        "ckpt-data-dir-proc-environ",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"data_dir": "/proc/self/environ"})),
        None,
        app=False,
    ),
    Case(
        "ckpt-tmnist-data-dir-proc-environ",
        "checkpoint",
        _ck("m.safetensors", lambda: _forged(meta={"dataset": "tmnist", "data_dir": "/proc/self/environ"})),
        "tmnist needs the path",
        app=False,
    ),
]


# --------------------------------------------------------------------------- images, CSVs, folders


def _fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


def _image_bytes(fmt: str, mode: str = "L", **save) -> bytes:
    """A white vertical bar on black in ``fmt``/``mode``."""
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        arr = np.zeros((96, 96), dtype=dtype)
        arr[15:80, 44:54] = 1000  # a small value range: must not be called blank
        im = Image.fromarray(arr)
    else:
        im = Image.new(mode, (96, 96), 0)
        ImageDraw.Draw(im).line([(48, 12), (48, 84)], fill=255 if mode == "L" else (255, 255, 255), width=10)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def _animated_gif() -> bytes:
    first = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(first).line([(48, 12), (48, 84)], fill=255, width=10)
    second = Image.new("L", (96, 96), 255)  # all white: taken, it would read as blank after inversion
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=[second])
    return buf.getvalue()


def _eps() -> bytes:
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 96 96\n"
        b"/Helvetica findfont 72 scalefont setfont 10 10 moveto (1) show showpage\n%%EOF\n"
    )


def _gz_bomb(unpacked_mb: int = 200) -> bytes:
    import zlib

    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    block = b"0," * (1 << 19)
    out = [comp.compress(b"names,labels\n")] + [comp.compress(block) for _ in range(unpacked_mb)]
    return b"".join(out) + comp.flush()


def _one_family() -> bytes:
    return tmnist_csv(3).replace(b"Font1-", b"Font0-").replace(b"Font2-", b"Font0-")


def _empty_names() -> bytes:
    return tmnist_csv(3).replace(b"Font1-Regular", b"")


def _idx_header(magic: int, count: int) -> bytes:
    return struct.pack(">IIII", magic, count, 28, 28) if magic == 2051 else struct.pack(">II", magic, count)


def _idx_file(path: Path, magic: int, count: int, n: int | None = None, fill: int = 0, size_of: int | None = None):
    """An IDX file of ``n`` items (default ``count``); zeros are written sparse, so 47 MB cost nothing."""
    n = count if n is None else n
    item = 784 if (size_of or magic) == 2051 else 1
    with open(path, "wb") as fh:
        fh.write(_idx_header(magic, count))
        if fill:
            fh.write(bytes([fill]) * (item * n))
        else:
            fh.truncate(len(_idx_header(size_of or magic, 0)) + item * n)


def _unpacked(tmp: Path, defect: str) -> Path:
    """Unpacked Fashion-MNIST files of both splits with the same ``defect``.

    Both splits carry it, so the API (which reads the test split) and the app's Train page
    (which reads the train split first) meet the same error.
    """
    raw = tmp / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, count, other in (("train", 60_000, 10_000), ("t10k", 10_000, 60_000)):
        images, labels = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
        _idx_file(images, 2051, count, n=count - 1 if defect == "short" else None)
        _idx_file(labels, 2049, count, fill=12 if defect == "labels" else 0)
        if defect == "magic":
            _idx_file(images, 2049, count, size_of=2051)
        if defect == "count":
            _idx_file(images, 2051, count - 1000, n=count)
        if defect == "swapped":
            _idx_file(labels, 2049, other)
        if defect == "fifo":
            labels.unlink()
            os.mkfifo(labels)
    return tmp / "data"


CASES += [
    Case("eps-named-png", "image", lambda t: _write(t, "x.png", _eps()), "not a readable image"),
    Case("ppm-format", "image", lambda t: _write(t, "x.png", _image_bytes("PPM")), "not a readable image"),
    Case("ico-format", "image", lambda t: _write(t, "x.png", _image_bytes("ICO")), "not a readable image"),
    Case("truncated-png", "image", lambda t: _write(t, "x.png", _png("L")[:60]), "not a readable image"),
    Case("fifo-image", "image", lambda t: _fifo(t, "x.png"), "not a regular file", app=False),
    Case("folder-image", "image", lambda t: (t / "d.png").mkdir() or t / "d.png", "not a regular file", app=False),
    Case("jpeg", "image", lambda t: _write(t, "x.jpg", _image_bytes("JPEG")), None),
    Case("bmp", "image", lambda t: _write(t, "x.bmp", _image_bytes("BMP")), None),
    Case("webp", "image", lambda t: _write(t, "x.webp", _image_bytes("WEBP", lossless=True)), None),
    Case("gif-first-frame", "image", lambda t: _write(t, "x.gif", _animated_gif()), None),
    Case("tiff-float32", "image", lambda t: _write(t, "x.tif", _image_bytes("TIFF", "F")), None),
    Case("png-16-bit-small-range", "image", lambda t: _write(t, "x.png", _image_bytes("PNG", "I;16")), None),
    Case("tiff-32-bit-small-range", "image", lambda t: _write(t, "x.tif", _image_bytes("TIFF", "I")), None),
    Case("jpeg-named-png", "image", lambda t: _write(t, "x.png", _image_bytes("JPEG")), None),
    Case("tmnist-gz-bomb", "tmnist", lambda t: _write(t, "TMNIST_Data.csv", _gz_bomb()), "unpacks to more than"),
    Case(
        "tmnist-too-many-rows",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", b"names,labels\n" + f"{SECRET},1\n".encode() * 50_000),
        "rows; the limit is 40,000",
    ),
    Case(
        "tmnist-huge-header",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", (SECRET * 40_000 + ",x\n1,2\n").encode()),
        "no 'labels' column",
    ),
    Case(
        "tmnist-secret-first-line",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", f"root:{SECRET}:19000:0:99999:7:::\n".encode()),
        "not a readable CSV|no 'labels' column|header but no rows",
    ),
    Case(
        "tmnist-extra-column-named-secret",
        "tmnist",
        lambda t: _write(t, "TMNIST_Data.csv", tmnist_csv(3, extra=SECRET)),
        "unexpected column",
    ),
    Case("tmnist-empty-font-names", "tmnist", lambda t: _write(t, "TMNIST_Data.csv", _empty_names()), "no font name"),
    Case("tmnist-one-family", "tmnist", lambda t: _write(t, "TMNIST_Data.csv", _one_family()), "only 1 family"),
    Case("tmnist-fifo", "tmnist", lambda t: _fifo(t, "TMNIST_Data.csv"), "not a regular file", app=False),
    Case(
        "idx-unpacked-short",
        "datadir",
        lambda t: _unpacked(t, "short"),
        "bytes",
    ),
    Case(
        "idx-unpacked-wrong-magic",
        "datadir",
        lambda t: _unpacked(t, "magic"),
        "magic",
    ),
    Case(
        "idx-unpacked-wrong-count",
        "datadir",
        lambda t: _unpacked(t, "count"),
        "declares (9,000|59,000)",
    ),
    Case(
        "idx-unpacked-labels-out-of-range",
        "datadir",
        lambda t: _unpacked(t, "labels"),
        "labels above 9",
    ),
    Case(
        "idx-unpacked-train-as-test",
        "datadir",
        lambda t: _unpacked(t, "swapped"),
        "swapped",
    ),
    Case("idx-unpacked-fifo", "datadir", lambda t: _unpacked(t, "fifo"), "not a regular file", app=False),
]


# --------------------------------------------------------------------------- output paths and arguments


def _existing(tmp: Path, name: str) -> str:
    (tmp / name).write_bytes(b"keep me")
    return str(tmp / name)


def _symlink(tmp: Path) -> str:
    (tmp / "target.txt").write_bytes(b"keep me")
    (tmp / "link.png").symlink_to(tmp / "target.txt")
    return str(tmp / "link.png")


# outpath cases: make(tmp) -> {"cmd": explain | evaluate | train, "out": path}; expect None means it works
CASES += [
    Case("out-is-a-folder", "outpath", lambda t: {"cmd": "explain", "out": str(_mkdir(t, "d.png"))}, "not a regular"),
    Case("out-in-proc", "outpath", lambda t: {"cmd": "explain", "out": "/proc/xwp-corpus.png"}, "not writable|cannot"),
    Case("out-uppercase-npy", "outpath", lambda t: {"cmd": "explain", "out": str(t / "X.NPY")}, None),
    Case("out-uppercase-png", "outpath", lambda t: {"cmd": "explain", "out": str(t / "X.PNG")}, None),
    Case("out-missing-folder", "outpath", lambda t: {"cmd": "explain", "out": str(t / "no/x.png")}, "does not exist"),
    Case("out-wrong-suffix", "outpath", lambda t: {"cmd": "explain", "out": str(t / "x.jpg")}, "must end with"),
    Case("out-no-suffix", "outpath", lambda t: {"cmd": "explain", "out": str(t / "x")}, "must end with"),
    Case("out-empty", "outpath", lambda t: {"cmd": "explain", "out": ""}, "must end with"),
    Case("out-fifo", "outpath", lambda t: {"cmd": "explain", "out": str(_fifo(t, "f.png"))}, "not a regular"),
    Case("out-symlink", "outpath", lambda t: {"cmd": "explain", "out": _symlink(t)}, "link"),
    Case("out-csv-folder", "outpath", lambda t: {"cmd": "evaluate", "out": str(_mkdir(t, "t.csv"))}, "not a regular"),
    Case("train-out-exists", "outpath", lambda t: {"cmd": "train", "out": _existing(t, "m.safetensors")}, "--force"),
]


def _mkdir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


# args cases: make(tmp) -> {"cli": argv ("{ckpt}" is the test checkpoint), "api": callable or None}
def _api_evaluate(**kw):
    def run(ckpt, typeface):
        import xwp

        model = xwp.load_checkpoint(ckpt).model
        return xwp.evaluate(model, typeface[1], **{"methods": ["xwp"], "n": 4, **kw})

    return run


def _api_study(**kw):
    def run(ckpt, typeface):
        from xwp.study.run import run_study

        return run_study(**{"datasets": ["typeface"], "seeds": [0], "n": 4, "methods": ["xwp"], **kw})

    return run


def _api_mlp(**kw):
    def run(ckpt, typeface):
        import xwp

        return xwp.MLP((784, 16, 10), **kw)

    return run


_TRAIN = ["train", "--hidden", "8", "--epochs", "1"]
CASES += [
    Case(
        "seed-2**64",
        "args",
        lambda t: {
            "cli": _TRAIN + ["--seed", "18446744073709551616", "--out", str(t / "m.safetensors")],
            "api": _api_mlp(seed=2**64),
        },
        "seed must be",
    ),
    Case(
        "seed-abc",
        "args",
        lambda t: {"cli": _TRAIN + ["--seed", "abc", "--out", str(t / "m.safetensors")], "api": _api_mlp(seed="abc")},
        "seed must be",
    ),
    Case(
        "evaluate-batch-size-0",
        "args",
        lambda t: {
            "cli": ["evaluate", "--checkpoint", "{ckpt}", "--batch-size", "0", "--out", str(t / "t.csv")],
            "api": _api_evaluate(batch_size=0),
        },
        "at least 1",
    ),
    Case(
        "evaluate-n-0",
        "args",
        lambda t: {
            "cli": ["evaluate", "--checkpoint", "{ckpt}", "--n", "0", "--out", str(t / "t.csv")],
            "api": _api_evaluate(n=0),
        },
        "at least 1|between 1",
    ),
    Case(
        "study-seeds-empty",
        "args",
        lambda t: {
            "cli": ["study", "--datasets", "typeface", "--seeds", "", "--out", str(t / "s")],
            "api": _api_study(seeds=[], out_dir=t / "s"),
        },
        "at least one seed",
    ),
    Case(
        "study-unknown-dataset",
        "args",
        lambda t: {
            "cli": ["study", "--datasets", "typeface,nope", "--out", str(t / "s")],
            "api": _api_study(datasets=["typeface", "nope"], out_dir=t / "s"),
        },
        "unknown dataset",
    ),
    Case(
        "study-n-too-large",
        "args",
        lambda t: {
            "cli": ["study", "--datasets", "typeface", "--n", "99999", "--out", str(t / "s")],
            "api": _api_study(n=99_999, out_dir=t / "s"),
        },
        "limited to 10000",
    ),
    Case(
        "study-out-not-empty",
        "args",
        lambda t: {"cli": ["study", "--datasets", "typeface", "--out", str(_mkdir(t, "s").parent)], "api": None},
        "--force",
    ),
]


# --------------------------------------------------------------------------- paths a visitor types

# datapath cases: make(tmp) -> {"dataset": ..., "path": what a visitor types}; the allowed data
# folder (XWP_DATA_DIRS) is tmp/"allowed". The API resolves the path with
# xwp.config.allowed_data_path and loads it; the app types it into the Train page's path box.
# The CLI's user is the operator, whose paths are not restricted, so these have no CLI outcome.
OUTSIDE = "not in a data folder this server allows"


def allowed(tmp: Path) -> Path:
    """The one allowed data folder of a datapath case."""
    folder = tmp / "allowed"
    folder.mkdir(exist_ok=True)
    return folder


def _typed(dataset: str, path: Callable[[Path], object]) -> Callable[[Path], dict]:
    return lambda t: {"dataset": dataset, "path": str(path(t))}


def _link(tmp: Path, target: str) -> Path:
    link = allowed(tmp) / "TMNIST_Data.csv"
    link.symlink_to(target)
    return link


def _outside(tmp: Path) -> Path:
    allowed(tmp)
    (tmp / "TMNIST_Data.csv").write_bytes(tmnist_csv(3))
    return tmp / "allowed" / ".." / "TMNIST_Data.csv"


CASES += [
    Case("path-etc-shadow", "datapath", _typed("tmnist", lambda t: allowed(t) and "/etc/shadow"), OUTSIDE),
    Case("path-proc-environ", "datapath", _typed("tmnist", lambda t: allowed(t) and "/proc/self/environ"), OUTSIDE),
    Case("path-dotdot-escape", "datapath", _typed("tmnist", _outside), OUTSIDE),
    Case("path-link-to-environ", "datapath", _typed("tmnist", lambda t: _link(t, "/proc/self/environ")), OUTSIDE),
    Case("path-missing-in-allowed", "datapath", _typed("tmnist", lambda t: allowed(t) / "nope.csv"), OUTSIDE),
    Case("path-nul-byte", "datapath", _typed("tmnist", lambda t: str(allowed(t)) + "/\x00x"), OUTSIDE),
    Case("path-fashion-proc", "datapath", _typed("fashion-mnist", lambda t: allowed(t) and "/proc/self"), OUTSIDE),
    Case("path-mnist-root", "datapath", _typed("mnist", lambda t: allowed(t) and "/"), OUTSIDE),
    Case(
        "path-allowed-secret-file",
        "datapath",
        _typed(
            "tmnist",
            lambda t: _write(allowed(t), "TMNIST_Data.csv", f"root:{SECRET}:19000:0:99999:7:::\n".encode()),
        ),
        "not a readable CSV|no 'labels' column|header but no rows",
    ),
    Case(
        "path-allowed-folder-works",
        "datapath",
        _typed("tmnist", lambda t: _write(allowed(t), "TMNIST_Data.csv", tmnist_csv(10)).parent),
        None,
    ),
]


# --------------------------------------------------------------------------- which cases the app can receive

# No app widget can deliver these, so tests/test_app.py does not run them: the canvas is a
# browser component AppTest cannot draw on (the same preprocessing is tested directly); the
# number inputs' bounds cannot hold NaN, 1e9 or 0 (learning rate 1e-6..10, epochs >= 1); the
# class selectbox offers only the model's classes; output paths and arguments are the CLI's.
_NOT_IN_APP = {"nan-learning-rate", "huge-learning-rate", "zero-epochs", "target-out-of-range"}
CASES = [replace(c, app=False) if c.kind in ("canvas", "outpath", "args") or c.id in _NOT_IN_APP else c for c in CASES]

"""Readers of dataset files: torchvision-layout IDX folders and the TMNIST CSV."""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from xwp.config import LIMITS, cache_dir
from xwp.errors import XWPError
from xwp.safety import gunzip_bounded, is_regular_file, read_regular

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


_COUNTS = {"train": 60_000, "test": 10_000}
_MAGIC = {"images": 2051, "labels": 2049}
_MAX_GZ_BYTES = 64 * 1024 * 1024


def read_torchvision(cls_name: str, folder: str, split: str, data_dir: str | None) -> tuple:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of an MNIST-like split.

    With ``data_dir`` the folder's files are read directly, never written, linked or
    unpacked in place: a ``.gz`` file must match its published MD5 (a train file with the
    test file's MD5 is reported as swapped) and is unpacked in memory; an unpacked file is
    used only after its size, IDX magic, image count (60,000 train / 10,000 test) and
    labels (0-9) are checked, so a bad file fails before any training starts. Without
    ``data_dir`` torchvision downloads into the cache.
    """
    import torch
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    if data_dir is None:
        root = cache_dir() / "data"
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as e:  # network errors come in many types
            raise XWPError(
                f"{cls_name} is not on this machine and could not be downloaded ({type(e).__name__}). "
                f"Put the four .gz files in DIR/{folder}/raw/ and pass --data-dir DIR (or data_dir=DIR)"
            ) from None
        return ds.data, ds.targets
    src = Path(data_dir) / folder / "raw"
    if not src.is_dir():
        src = Path(data_dir) / "raw" if (Path(data_dir) / "raw").is_dir() else Path(data_dir)
    names = _IDX_FILES[split]
    missing = [n for n in names if not (src / n).exists() and not (src / f"{n}.gz").exists()]
    if missing:
        raise XWPError(
            f"{data_dir} lacks {', '.join(m + '.gz' for m in missing)}; expected the {folder} files "
            f"in torchvision's layout: DIR/{folder}/raw/*-ubyte.gz"
        )
    md5s = {filename: md5 for filename, md5 in cls.resources}
    images = read_idx(src, names[0], split, "images", md5s)
    labels = read_idx(src, names[1], split, "labels", md5s)
    if labels.max(initial=0) > 9:
        raise XWPError(f"{src / names[1]} has labels above 9; MNIST-like labels are 0-9 (the file is damaged)")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _idx_size(kind: str, count: int) -> int:
    """Bytes of an unpacked IDX file of ``count`` 28x28 images or labels."""
    return 16 + 784 * count if kind == "images" else 8 + count


def read_idx(src: Path, stem: str, split: str, kind: str, md5s: dict[str, str] | None = None) -> np.ndarray:
    """One IDX file (``stem.gz`` preferred, else ``stem``) of ``split``, checked before use."""
    other = "test" if split == "train" else "train"
    other_stem = _IDX_FILES[other][_IDX_FILES[split].index(stem)]
    expected = _idx_size(kind, _COUNTS[split])
    gz, plain = src / f"{stem}.gz", src / stem
    if gz.exists():
        data = read_regular(gz, "file", _MAX_GZ_BYTES)
        if md5s is not None and f"{stem}.gz" in md5s:
            digest = hashlib.md5(data).hexdigest()
            if digest == md5s.get(f"{other_stem}.gz"):
                raise XWPError(f"{gz} is the published {other} file: the train and test files are swapped")
            if digest != md5s[f"{stem}.gz"]:
                raise XWPError(
                    f"{gz} is damaged or not the published file (its MD5 differs); "
                    "copy it again from the original source"
                )
        raw = gunzip_bounded(data, expected, f"file {gz.name}")
        where = gz
    else:
        size = os.stat(plain).st_size if is_regular_file(plain) else -1
        if size == _idx_size(kind, _COUNTS[other]):
            raise XWPError(
                f"{plain} holds {_COUNTS[other]:,} {kind}, the {other} split's count: "
                "the train and test files are swapped"
            )
        if size != expected:
            what = "is not a regular file" if size < 0 else f"has {size:,} bytes"
            raise XWPError(f"{plain} {what}; the unpacked {split} {kind} file has {expected:,} bytes (damaged?)")
        raw, where = read_regular(plain, "file", expected), plain
    head = np.frombuffer(raw[:16], dtype=">u4") if len(raw) >= 16 else np.zeros(0, dtype=">u4")
    dims = (3, 28, 28) if kind == "images" else (1,)
    if len(head) < 2 or int(head[0]) != _MAGIC[kind] or len(raw) != expected:
        raise XWPError(f"{where} is not an IDX {kind} file of the {split} split (wrong magic number or length)")
    if int(head[1]) != _COUNTS[split]:
        raise XWPError(f"{where} declares {int(head[1]):,} {kind}; the {split} split has {_COUNTS[split]:,}")
    if kind == "images":
        if tuple(int(v) for v in head[2:4]) != dims[1:]:
            raise XWPError(f"{where} holds images of another size than 28x28")
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28).copy()
    return np.frombuffer(raw, dtype=np.uint8, offset=8).copy()


def read_tmnist_csv(source: str | os.PathLike | bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a Typeface-MNIST CSV (``names,labels,1,...,784``; pixels 0-255, white on black).

    Returns images ``(N, 28, 28)`` uint8, labels ``(N,)`` and font names ``(N,)``. Plain or
    gzip (by content), bounded: at most ``LIMITS.max_csv_bytes`` unpacked and
    ``LIMITS.max_csv_rows`` rows; error messages never quote the file's contents.
    """
    import pandas as pd

    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > LIMITS.max_csv_bytes:
            raise XWPError(f"the TMNIST file is larger than {LIMITS.max_csv_bytes / 2**20:.0f} MiB (XWP_MAX_CSV_MB)")
    else:
        data = read_regular(source, "TMNIST file", LIMITS.max_csv_bytes)
    if data[:2] == b"\x1f\x8b":
        data = gunzip_bounded(data, LIMITS.max_csv_bytes, "TMNIST CSV")
    rows = data.count(b"\n") + (not data.endswith(b"\n")) - 1
    if rows > LIMITS.max_csv_rows:
        raise XWPError(f"the CSV has about {rows:,} rows; the limit is {LIMITS.max_csv_rows:,} (XWP_MAX_CSV_ROWS)")
    try:
        frame = pd.read_csv(io.BytesIO(data), low_memory=False, nrows=LIMITS.max_csv_rows + 1)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, ValueError) as e:
        raise XWPError(f"not a readable CSV file ({type(e).__name__}); expected TMNIST_Data.csv from Kaggle") from None
    del data
    cols = [str(c).strip() for c in frame.columns]
    pixel_cols = [str(i) for i in range(1, 785)]
    if "labels" not in cols:
        raise XWPError("the CSV has no 'labels' column; expected the TMNIST header names,labels,1,...,784")
    missing = [c for c in pixel_cols if c not in cols]
    if missing:
        raise XWPError(f"the CSV lacks {len(missing)} of the 784 pixel columns (first missing: {missing[0]})")
    extra = [c for c in cols if c not in pixel_cols and c not in ("names", "labels")]
    if extra:
        raise XWPError(
            f"the CSV has {len(extra)} unexpected column(s) (the first at position {cols.index(extra[0]) + 1}); "
            "expected exactly names,labels,1,...,784"
        )
    frame.columns = cols
    if len(frame) == 0:
        raise XWPError("the CSV has a header but no rows")
    if len(frame) > LIMITS.max_csv_rows:
        raise XWPError(f"the CSV has more than {LIMITS.max_csv_rows:,} rows (XWP_MAX_CSV_ROWS)")
    block = frame[pixel_cols]
    if not all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
        block = block.apply(pd.to_numeric, errors="coerce")
    pixels = block.to_numpy(dtype=np.float32)
    labels = pd.to_numeric(frame["labels"], errors="coerce").to_numpy(dtype=np.float64)
    bad_rows = np.flatnonzero(np.isnan(pixels).any(1) | np.isnan(labels))
    if len(bad_rows):
        raise XWPError(
            f"row {bad_rows[0] + 2} of the CSV has a non-numeric pixel or label ({len(bad_rows)} rows in all)"
        )
    if pixels.min() < 0 or pixels.max() > 255:
        raise XWPError("pixel values must lie in 0..255")
    if not np.isin(labels, np.arange(10)).all():
        raise XWPError("labels must be the digits 0..9")
    if "names" in cols:
        raw_names = frame["names"]
        empty = np.flatnonzero(raw_names.isna().to_numpy() | (raw_names.astype(str).str.strip() == "").to_numpy())
        if len(empty):
            raise XWPError(f"row {empty[0] + 2} of the CSV has no font name ({len(empty)} rows in all)")
        names = raw_names.astype(str).str.slice(0, 100).to_numpy()
    else:
        names = np.asarray(["?"] * len(frame))
    return pixels.reshape(-1, 28, 28).round().astype(np.uint8), labels.astype(np.int64), names


@functools.lru_cache(maxsize=1)
def read_tmnist_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_tmnist_csv` of an unchanged file, parsed once for both splits (errors are not cached)."""
    return read_tmnist_csv(path)

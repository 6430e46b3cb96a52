"""Readers of dataset files: torchvision-layout IDX folders and the TMNIST CSV."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np

from xwp.config import cache_dir
from xwp.errors import XWPError

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _torchvision(cls_name: str, folder: str, split: str, data_dir: str | None) -> tuple:
    """Images and labels through torchvision, never writing into ``data_dir``.

    torchvision unpacks the ``.gz`` files next to themselves, so a given folder is
    mirrored into the cache with links (or copies) and torchvision reads the mirror,
    offline: it finds the files and checks their MD5 instead of downloading.
    """
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
    names = _IDX_FILES["train"] + _IDX_FILES["test"]  # torchvision checks all four
    found = {n: [p for p in (src / n, src / f"{n}.gz") if p.is_file()] for n in names}
    missing = [n for n, ps in found.items() if not ps]
    if missing:
        raise XWPError(
            f"{data_dir} lacks {', '.join(m + '.gz' for m in missing)}; torchvision needs all four {folder} files "
            f"in its layout: DIR/{folder}/raw/*-ubyte.gz"
        )
    for filename, md5 in cls.resources:  # verify first: on a mismatch torchvision would try to download
        stem = filename[: -len(".gz")]
        if (src / stem).is_file():
            continue
        if _md5(src / filename) != md5:
            raise XWPError(
                f"{src / filename} is damaged or not the published file (its MD5 differs); "
                f"copy it again from the original source"
            )
    key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    mirror = cache_dir() / "torchvision" / key
    raw = mirror / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for paths in found.values():
        for p in paths:
            _link_or_copy(p, raw / p.name)
    try:
        ds = cls(str(mirror), train=split == "train", download=True)
        return ds.data, ds.targets
    except Exception as e:
        for n in names:  # a bad unpacked file would be reused next time
            (raw / n).unlink(missing_ok=True)
        detail = " ".join(str(e).split())[:120]
        raise XWPError(
            f"the {folder} files in {src} are damaged ({type(e).__name__}: {detail}); copy them again "
            "from the original source"
        ) from None


def _md5(path: Path) -> str:
    """MD5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` refer to ``src`` (symlink, or a copy where links are not allowed)."""
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and dst.resolve() == src.resolve():
            return
        if not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, dst)


def read_tmnist_csv(source: str | os.PathLike | bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a Typeface-MNIST CSV (``names,labels,1,...,784``; pixels 0-255, white on black).

    Returns images ``(N, 28, 28)`` uint8, labels ``(N,)`` and font names ``(N,)``.
    """
    import pandas as pd

    try:
        if isinstance(source, bytes | bytearray):
            buf = io.BytesIO(source)
            if source[:2] == b"\x1f\x8b":
                buf = io.BytesIO(gzip.decompress(source))
            frame = pd.read_csv(buf, low_memory=False)
        else:
            frame = pd.read_csv(source, low_memory=False)
    except FileNotFoundError:
        raise XWPError(f"TMNIST file {source} does not exist") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as e:
        raise XWPError(f"not a readable CSV file ({type(e).__name__}); expected TMNIST_Data.csv from Kaggle") from None
    cols = [str(c).strip() for c in frame.columns]
    pixel_cols = [str(i) for i in range(1, 785)]
    if "labels" not in cols:
        raise XWPError(
            f"the CSV has no 'labels' column (its first columns: {', '.join(cols[:4])}); "
            "expected the TMNIST header names,labels,1,...,784"
        )
    missing = [c for c in pixel_cols if c not in cols]
    if missing:
        raise XWPError(f"the CSV lacks {len(missing)} of the 784 pixel columns (first missing: {missing[0]})")
    extra = [c for c in cols if c not in pixel_cols and c not in ("names", "labels")]
    if extra:
        raise XWPError(
            f"the CSV has {len(extra)} unexpected column(s) ({', '.join(extra[:3])}); "
            "expected exactly names,labels,1,...,784"
        )
    frame.columns = cols
    if len(frame) == 0:
        raise XWPError("the CSV has a header but no rows")
    pixels = frame[pixel_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
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
    names = frame["names"].astype(str).to_numpy() if "names" in cols else np.asarray(["?"] * len(frame))
    return pixels.reshape(-1, 28, 28).round().astype(np.uint8), labels.astype(np.int64), names


@functools.lru_cache(maxsize=1)
def _read_tmnist_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_tmnist_csv` of an unchanged file, parsed once for both splits (errors are not cached)."""
    return read_tmnist_csv(path)

"""Uploads from app visitors: checked by size and content before anything parses or stores them.

Above :mod:`xwp.safety`, :mod:`xwp.checkpoint` and :mod:`xwp.data.images`, whose checks it combines.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from xwp.checkpoint import read_header
from xwp.config import LIMITS, STALE_TEMP_SECONDS, cache_dir
from xwp.data.images import image_format
from xwp.errors import XWPError
from xwp.safety import gunzip_bounded

UPLOAD_KINDS = ("checkpoint", "image", "csv")


def check_upload(data: bytes, kind: str, name: str = "upload") -> None:
    """Refuse an upload before it is parsed or stored: size, and a first look at its content.

    ``kind`` is ``checkpoint`` (safetensors header), ``image`` (one of the accepted image
    formats by content) or ``csv`` (plain or gzip text, decompressed size bounded).
    """
    if kind not in UPLOAD_KINDS:
        raise XWPError(f"unknown upload kind {kind!r}; choose from {', '.join(UPLOAD_KINDS)}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise XWPError("an upload must be bytes")
    if len(data) == 0:
        raise XWPError(f"{name} is empty or truncated: it has no bytes")
    if len(data) > LIMITS.max_upload_bytes:
        raise XWPError(
            f"{name} is {len(data) / 2**20:.1f} MiB; uploads are limited to "
            f"{LIMITS.max_upload_bytes / 2**20:.0f} MiB (XWP_MAX_UPLOAD_MB)"
        )
    head = bytes(data[:16])
    if kind == "checkpoint":
        read_header(data)
    elif kind == "image":
        image_format(head if len(data) < 16 else bytes(data[:64]))
    elif kind == "csv" and head[:2] == b"\x1f\x8b":
        gunzip_bounded(bytes(data), LIMITS.max_csv_bytes, "CSV")


@contextlib.contextmanager
def upload_file(data: bytes, kind: str, suffix: str = "", name: str = "upload") -> Iterator[Path]:
    """Check an upload (:func:`check_upload`), then hold it in a private temporary file while in use.

    For libraries that need a path. The file lives in ``CACHE/uploads`` with mode 0600 and
    is removed when the ``with`` block ends, even on errors; files a killed server left
    there are removed after 10 minutes by the next call.
    """
    check_upload(data, kind, name)
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.glob("xwp-upload-*"):
        with contextlib.suppress(OSError):
            if now - old.lstat().st_mtime > STALE_TEMP_SECONDS:
                old.unlink()
    fd, path = tempfile.mkstemp(prefix="xwp-upload-", suffix=suffix[:16], dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield Path(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)

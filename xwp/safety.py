"""Guards for files and bytes that may be hostile: regular files only, bounded reads, safe outputs.

The threat model (README, "Reliability"): the operator who starts the app or runs the CLI
is trusted; app visitors, their uploads and every file a checkpoint or CSV came from are not.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from xwp.config import LIMITS, STALE_TEMP_SECONDS, atomic_write, cache_dir
from xwp.errors import XWPError

UPLOAD_KINDS = ("checkpoint", "image", "csv")
_PUNCTUATION = frozenset("\\`*_{}[]()<>#+-.!|~$:&\"'=^%@,;/?")


def open_regular(path: str | os.PathLike, what: str = "file") -> IO[bytes]:
    """Open ``path`` for reading only if it is a regular file (never blocks on a FIFO or device)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise XWPError(f"{what} {path} does not exist or cannot be read") from None
    if not stat.S_ISREG(st.st_mode):
        raise XWPError(f"{what} {path} is not a regular file (a folder, FIFO or device); give a file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in now cannot block
    except OSError as e:
        raise XWPError(f"cannot open {what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise XWPError(f"{what} {path} is not a regular file (a folder, FIFO or device); give a file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file (following links), False for anything else or nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_regular(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    """All bytes of a regular file of at most ``max_bytes`` (XWPError otherwise)."""
    with open_regular(path, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise XWPError(f"{what} {path} is {size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise XWPError(f"{what} {path} is larger than {max_bytes / 2**20:.0f} MiB")
    return data


def gunzip_bounded(data: bytes, max_bytes: int, what: str = "file") -> bytes:
    """Decompress gzip ``data`` to at most ``max_bytes`` (a zip bomb stops at the limit)."""
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            while block := fh.read(1 << 20):
                out += block
                if len(out) > max_bytes:
                    raise XWPError(f"the {what} unpacks to more than {max_bytes / 2**20:.0f} MiB; that is the limit")
    except (OSError, EOFError, zlib.error):
        raise XWPError(f"the {what} is not a readable .gz file (damaged or truncated)") from None
    return bytes(out)


def plain_text(value: object, limit: int = 200) -> str:
    """Text from a file (class names, dataset, upload names) made safe to put in Markdown.

    One line of at most ``limit`` characters in which every ASCII punctuation character is
    backslash-escaped (CommonMark allows that for all of them), so links, images, HTML,
    LaTeX (``$``) and Streamlit directives (``:red[...]``, ``:smile:``) show as typed.
    """
    from xwp.errors import safe_message

    return "".join("\\" + c if c in _PUNCTUATION else c for c in safe_message(value, limit))


def check_out_path(path: str | os.PathLike, suffixes: tuple[str, ...], force: bool = True) -> Path:
    """Check an output path before any work is done: suffix, folder, writability, overwrite.

    The suffix is compared case-insensitively (``X.NPY`` is a ``.npy`` file and stays named
    ``X.NPY``); an existing file is refused unless ``force``; folders, FIFOs and devices are
    always refused.
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise XWPError(f"--out must end with {' or '.join(suffixes)}, got {p}")
    if not p.parent.is_dir():
        raise XWPError(f"folder {p.parent} does not exist")
    if p.exists() or p.is_symlink():
        if not is_regular_file(p) or p.is_symlink():
            raise XWPError(f"--out {p} exists and is not a regular file (a folder, link, FIFO or device)")
        if not force:
            raise XWPError(f"{p} exists; pass --force to overwrite it")
    probe = p.parent / f".xwp-probe-{os.getpid()}.tmp"
    try:  # a real probe: os.access says yes to root even where nothing can be created (/proc)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError:
        raise XWPError(f"folder {p.parent} is not writable") from None
    return p


def write_output(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], Any]) -> Path:
    """Write an output file atomically: all of it or nothing (a full disk leaves no truncated file)."""
    p = Path(path)
    try:
        atomic_write(p, data)
    except OSError as e:
        raise XWPError(f"cannot write {p}: {e.strerror or type(e).__name__}") from None
    return p


def json_depth(obj: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no further than ``limit + 1`` (no recursion)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


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
        from xwp.checkpoint import _header

        _header(data)
    elif kind == "image":
        from xwp.images import image_format

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

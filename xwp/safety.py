"""Guards for files and bytes that may be hostile: regular files only, bounded reads, safe outputs.

The threat model (README, "Reliability"): the operator who starts the app or runs the CLI
is trusted; app visitors, their uploads and every file a checkpoint or CSV came from are not.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from xwp.config import atomic_write
from xwp.errors import XWPError

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

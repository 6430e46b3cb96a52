"""Paths and limits in one place; each limit can be changed with an environment variable."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def cache_dir() -> Path:
    """Folder for built datasets, unpacked downloads and the app's default model.

    ``$XWP_CACHE_DIR``, else ``$XDG_CACHE_HOME/xwp``, else ``~/.cache/xwp``.
    """
    root = os.environ.get("XWP_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xwp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes | Callable[[IO[bytes]], object]) -> None:
    """Write ``data`` (bytes, or a function that writes to a binary file) to ``path`` all or nothing.

    The file is written and synced under a temporary name unique to this process and thread,
    then renamed into place; on failure the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def env_int(name: str, default: int) -> int:
    """Integer from the environment, or ``default``."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (app, CLI and API share them)."""

    max_epochs: int = env_int("XWP_MAX_EPOCHS", 100)
    max_hidden_width: int = env_int("XWP_MAX_HIDDEN_WIDTH", 4096)
    max_hidden_layers: int = env_int("XWP_MAX_HIDDEN_LAYERS", 8)
    max_eval_images: int = env_int("XWP_MAX_EVAL_IMAGES", 10_000)
    max_upload_bytes: int = env_int("XWP_MAX_UPLOAD_MB", 200) * 1024 * 1024
    max_image_pixels: int = env_int("XWP_MAX_IMAGE_PIXELS", 4096 * 4096)
    min_image_side: int = 8


LIMITS = Limits()

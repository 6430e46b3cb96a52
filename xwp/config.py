"""Paths and limits in one place; each limit can be changed with an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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

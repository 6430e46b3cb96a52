"""Paths, limits and every ``XWP_*`` environment setting in one place (:data:`SETTINGS`).

Also the allow-list of data folders (:func:`allowed_data_path`): the only folders whose files
an app visitor's input may name. The operator is trusted, visitors and their files are not.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xwp.errors import XWPError

STALE_TEMP_SECONDS = 600


def cache_dir() -> Path:
    """Folder for built datasets, unpacked downloads and the app's default model.

    ``$XWP_CACHE_DIR``, else ``$XDG_CACHE_HOME/xwp``, else ``~/.cache/xwp``.
    """
    root = os.environ.get("XWP_CACHE_DIR")  # a path: read as text, declared in SETTINGS
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
    clean_stale_temps(path)
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


def clean_stale_temps(path: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left beside ``path`` when a writer was killed.

    Only names of our own pattern (``.NAME.PID.THREAD.tmp``) older than ``older_than``
    seconds are removed, so a write in progress elsewhere is never disturbed.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.\d+\.\d+\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            stale = pattern.match(entry.name) and entry.is_file(follow_symlinks=False)
            if stale and now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@dataclass(frozen=True)
class Setting:
    """One ``XWP_*`` environment setting: its default and what it changes."""

    name: str
    default: int | str
    meaning: str


#: every ``XWP_*`` environment setting xwp reads, with its default; :func:`setting` reads them
#: and ``tests/test_architecture.py`` checks that no other ``XWP_*`` name is read anywhere
SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        # paths
        Setting("XWP_CACHE_DIR", "", "folder for built datasets, downloads, default models and workspaces"),
        Setting("XWP_DATA_DIRS", "", "extra data folders visitors may name, separated by os.pathsep"),
        # limits of one request (app, CLI and API)
        Setting("XWP_MAX_EPOCHS", 100, "epochs one training may ask for"),
        Setting("XWP_MAX_HIDDEN_WIDTH", 4096, "units of one hidden layer"),
        Setting("XWP_MAX_HIDDEN_LAYERS", 8, "hidden layers of one network"),
        Setting("XWP_MAX_EVAL_IMAGES", 10_000, "images one evaluation may score"),
        Setting("XWP_MAX_UPLOAD_MB", 200, "size of one uploaded file (MB)"),
        Setting("XWP_MAX_IMAGE_PIXELS", 4096 * 4096, "pixels of one uploaded image"),
        Setting("XWP_MAX_CLASSES", 1000, "classes of one checkpoint"),
        Setting("XWP_MAX_META_KB", 1024, "metadata of one checkpoint (KB)"),
        Setting("XWP_MAX_META_DEPTH", 16, "nesting depth of a checkpoint's metadata"),
        Setting("XWP_MAX_CSV_MB", 128, "size of one TMNIST CSV (MB)"),
        Setting("XWP_MAX_CSV_ROWS", 40_000, "rows of one TMNIST CSV"),
        Setting("XWP_MAX_MESSAGE_CHARS", 300, "length of one error message (read by xwp.errors, below this module)"),
        # the app's compute queue (xwp.serve.compute)
        Setting("XWP_COMPUTE_WORKERS", 1, "worker threads of the compute queue"),
        Setting("XWP_COMPUTE_THREADS", 0, "torch threads per worker (0: the cores left, at least 1)"),
        Setting("XWP_COMPUTE_QUEUE", 256, "jobs waiting in the queue before new ones are refused"),
        Setting("XWP_COMPUTE_BATCH", 64, "strokes merged into one batched call"),
        Setting("XWP_COMPUTE_LANE", 1, "1: strokes get their own interactive lane; 0: one queue"),
        Setting("XWP_COMPUTE_NICE", 10, "nice increment of the worker that runs trainings and comparisons"),
        # the app's jobs and default model (xwp.app)
        Setting("XWP_MAX_JOBS", 3, "trainings and comparisons one workspace may run at once"),
        Setting("XWP_JOB_REFRESH_MAX_S", 5, "slowest refresh of a job's progress panel (seconds)"),
        Setting("XWP_DEFAULT_EPOCHS", 10, "epochs of the app's default model (tests use 1)"),
        # workspaces (xwp.serve.workspace)
        Setting("XWP_WORKSPACE_MB", 200, "size of one workspace (MB)"),
        Setting("XWP_WORKSPACE_MODELS", 20, "models (and, separately, comparisons) one workspace keeps"),
        Setting("XWP_WORKSPACE_DAYS", 7, "days an unused workspace is kept"),
        Setting("XWP_WORKSPACES_MAX", 1000, "workspaces on the server"),
        Setting("XWP_WORKSPACES_TOTAL_MB", 2048, "size of all workspaces together (MB)"),
    )
}


def setting(name: str) -> int:
    """The integer value of the declared setting ``name``: the environment's, else its default.

    A value that is not a whole number falls back to the default. An undeclared name is a
    programming error (``KeyError``): declare it in :data:`SETTINGS` first.
    """
    default = SETTINGS[name].default
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return int(default)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (app, CLI and API share them)."""

    max_epochs: int = setting("XWP_MAX_EPOCHS")
    max_hidden_width: int = setting("XWP_MAX_HIDDEN_WIDTH")
    max_hidden_layers: int = setting("XWP_MAX_HIDDEN_LAYERS")
    max_eval_images: int = setting("XWP_MAX_EVAL_IMAGES")
    max_upload_bytes: int = setting("XWP_MAX_UPLOAD_MB") * 1024 * 1024
    max_image_pixels: int = setting("XWP_MAX_IMAGE_PIXELS")
    min_image_side: int = 8
    max_classes: int = setting("XWP_MAX_CLASSES")
    max_meta_bytes: int = setting("XWP_MAX_META_KB") * 1024
    max_meta_depth: int = setting("XWP_MAX_META_DEPTH")
    max_csv_bytes: int = setting("XWP_MAX_CSV_MB") * 1024 * 1024
    max_csv_rows: int = setting("XWP_MAX_CSV_ROWS")
    max_seed: int = 2**63 - 1


LIMITS = Limits()


_startup_dirs: list[Path] = []


def register_data_dir(path: str | os.PathLike) -> None:
    """Allow ``path`` as a data folder (the folder the operator gave at start-up)."""
    resolved = Path(path).resolve()
    if resolved not in _startup_dirs:
        _startup_dirs.append(resolved)


def allowed_data_dirs() -> list[Path]:
    """Folders whose files visitors may name: the cache's ``data/``, start-up folders and ``$XWP_DATA_DIRS``.

    Only the cache's ``data/`` subfolder (torchvision downloads) is allowed, never the cache
    itself: it also holds workspaces, stored uploads and default models, which a typed path
    must not reach. ``XWP_DATA_DIRS`` holds folders separated by ``os.pathsep`` (``:`` on Linux).
    """
    extra = [p for p in os.environ.get("XWP_DATA_DIRS", "").split(os.pathsep) if p.strip()]
    data = cache_dir() / "data"
    data.mkdir(exist_ok=True)
    dirs = [data.resolve(), *_startup_dirs, *(Path(p).resolve() for p in extra)]
    return list(dict.fromkeys(dirs))


def allowed_data_path(path: str | os.PathLike) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside an allowed data folder, else XWPError.

    The same message is given for a path that does not exist and one outside the
    allowed folders, so a visitor cannot probe the server's file system.
    """
    text = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    refused = XWPError(
        "that path is not in a data folder this server allows or does not exist; "
        "ask the operator to add the folder to XWP_DATA_DIRS"
    )
    if not text or "\x00" in text:
        raise refused
    try:
        resolved = Path(text).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    if not any(resolved == d or resolved.is_relative_to(d) for d in allowed_data_dirs()):
        raise refused
    return resolved

"""Workspaces: a browser's models and comparison results on disk, so they survive reloads and new tabs.

A workspace is a folder ``cache_dir()/workspaces/<id>/`` named by an unguessable id
(:func:`new_id`, 22 URL-safe characters, 128 random bits) that the app carries in its URL
(``?workspace=<id>``). Whoever knows the id sees the workspace, nobody else: ids are
checked against :data:`ID_RE` before they touch the file system, so no id can name
another folder.

Layout (every file written atomically: temporary file, fsync, rename)::

    <id>/stamp                          last use (its mtime); expiry counts from it
    <id>/.lock                          serialises writers (two tabs saving at once)
    <id>/models/<mid>.safetensors       the checkpoint (xwp.checkpoint; no pickle)
    <id>/models/<mid>.json              name, dataset, arch, accuracy, created, history
    <id>/models/<mid>.snapshots.safetensors   first-layer weights per epoch (float16, bounded)
    <id>/comparisons/<cid>.json         settings and facts of one comparison
    <id>/comparisons/<cid>.<table>.csv  its tables
    <id>/comparisons/<cid>.arrays.safetensors  its curves and example maps

There is no index file: listing reads the ``.json`` files, which are written last, so a
crash or a second tab never leaves an index that disagrees with the files. Everything read
back is treated as untrusted (the disk may be shared): regular files only (no links, no
FIFOs), size caps, JSON checked field by field, checkpoints through
:func:`xwp.checkpoint.load_checkpoint`.

Limits (``XWP_WORKSPACE_MB``, ``XWP_WORKSPACE_MODELS``, ``XWP_WORKSPACE_DAYS``,
``XWP_WORKSPACES_MAX``, ``XWP_WORKSPACES_TOTAL_MB``; docs/app.md, "Workspaces"): a save that
would pass one is refused with :class:`WorkspaceFull`, nothing is evicted behind the user's
back; unused workspaces expire (:func:`cleanup_expired`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xwp.checkpoint import Checkpoint, checkpoint_bytes, load_checkpoint
from xwp.config import atomic_write, cache_dir, setting
from xwp.errors import XWPError
from xwp.serve.storage import (  # noqa: F401 (the entry types are part of this module's API)
    MAX_CSV,
    MAX_JSON,
    Comparison,
    ComparisonEntry,
    ModelEntry,
    clean_name,
    created_time,
    decode_arrays,
    decode_table,
    encode_comparison,
    file_size,
    json_bytes,
    parse_history,
    read_json,
    read_regular,
    remove_tree,
    snapshot_bytes,
    snapshots_from_bytes,
    table_names,
)

#: a workspace id: what ``secrets.token_urlsafe(16)`` returns (22 characters of [A-Za-z0-9_-])
ID_RE = re.compile(r"\A[A-Za-z0-9_-]{22}\Z")
#: a model or comparison id inside a workspace (``secrets.token_hex(8)``)
ITEM_RE = re.compile(r"\A[0-9a-f]{16}\Z")
TOUCH_EVERY_S = 3600.0  # the stamp is refreshed at most hourly (expiry has day resolution)
CLEAN_EVERY_S = 600.0
ORPHAN_AGE_S = 3600.0  # files without a committed .json entry older than this are removed


@dataclass(frozen=True)
class WorkspaceLimits:
    """Bounds of one workspace and of all of them."""

    max_bytes: int = field(default_factory=lambda: setting("XWP_WORKSPACE_MB") * 1024 * 1024)
    max_items: int = field(default_factory=lambda: setting("XWP_WORKSPACE_MODELS"))
    days: float = field(default_factory=lambda: float(setting("XWP_WORKSPACE_DAYS")))
    max_workspaces: int = field(default_factory=lambda: setting("XWP_WORKSPACES_MAX"))
    max_total_bytes: int = field(default_factory=lambda: setting("XWP_WORKSPACES_TOTAL_MB") * 1024 * 1024)


class WorkspaceFull(XWPError):
    """A save would pass the workspace's size or count limit; nothing was written."""


# --------------------------------------------------------------------------- ids and paths


def new_id() -> str:
    """A fresh unguessable workspace id (128 random bits, URL safe)."""
    return secrets.token_urlsafe(16)


def valid_id(wid: object) -> bool:
    """Whether ``wid`` has the exact form of a workspace id (checked before any path is built)."""
    return isinstance(wid, str) and ID_RE.match(wid) is not None


def root_dir() -> Path:
    """The folder holding every workspace: ``cache_dir()/workspaces``."""
    return cache_dir() / "workspaces"


def _item_id(item: object, what: str) -> str:
    """``item`` if it is a well-formed model/comparison id, else :class:`XWPError`."""
    if not (isinstance(item, str) and ITEM_RE.match(item)):
        raise XWPError(f"no such {what} in this workspace")
    return item


# --------------------------------------------------------------------------- the workspace


class Workspace:
    """The stored models and comparisons of one workspace id (see the module docstring).

    Creating the object touches nothing; the folder appears at the first save.
    """

    def __init__(self, wid: str, root: str | os.PathLike | None = None, limits: WorkspaceLimits | None = None):
        if not valid_id(wid):
            raise XWPError("invalid workspace id (a new workspace will be created)")
        self.id = wid
        self.root = Path(root) if root is not None else root_dir()
        self.path = self.root / wid
        self.limits = limits or WorkspaceLimits()

    # ------------------------------------------------------------------ plumbing

    def exists(self) -> bool:
        """Whether this workspace has a folder on disk."""
        return self.path.is_dir() and not self.path.is_symlink()

    def _dir(self, sub: str) -> Path:
        """A subfolder, created if needed; refuses links planted in its place."""
        d = self.path / sub
        for p in (self.root, self.path, d):
            if p.is_symlink():
                raise XWPError("the workspace folder is damaged (a link where a folder belongs)")
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the workspace's writer lock (an ``flock`` on ``.lock``, shared by processes and threads)."""
        self._dir("")
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def touch(self, force: bool = False) -> None:
        """Record a use (the stamp's mtime), at most hourly unless ``force``; expiry counts from it."""
        stamp = self.path / "stamp"
        try:
            if not force and time.time() - stamp.lstat().st_mtime < TOUCH_EVERY_S:
                return
        except OSError:
            pass
        if not self.exists():
            if not force:
                return
            self._dir("")
        atomic_write(stamp, b"")

    def last_used(self) -> float:
        """When the workspace was last used (seconds since the epoch; the folder's mtime if no stamp)."""
        for p in (self.path / "stamp", self.path):
            with contextlib.suppress(OSError):
                return p.lstat().st_mtime
        return 0.0

    def usage(self) -> int:
        """Bytes the workspace's regular files take."""
        total = 0
        for sub in ("models", "comparisons"):
            d = self.path / sub
            if d.is_dir() and not d.is_symlink():
                total += sum(file_size(p) for p in d.iterdir())
        return total

    def _check_room(self, new_bytes: int, kind: str, count: int) -> None:
        """Refuse a save of ``new_bytes`` that would pass the size or count limit."""
        lim = self.limits
        if count >= lim.max_items:
            raise WorkspaceFull(
                f"this workspace already keeps {count} {kind}s (the limit is {lim.max_items}, XWP_WORKSPACE_MODELS); "
                f"delete one to save another"
            )
        used = self.usage()
        if used + new_bytes > lim.max_bytes:
            raise WorkspaceFull(
                f"this workspace would need {(used + new_bytes) / 2**20:.1f} MB, more than its limit of "
                f"{lim.max_bytes / 2**20:.0f} MB (XWP_WORKSPACE_MB); delete a model or comparison to save this one"
            )
        total = total_usage(self.root)
        if total + new_bytes > lim.max_total_bytes:
            raise WorkspaceFull(
                f"the server's workspaces are full ({total / 2**20:.0f} MB of {lim.max_total_bytes / 2**20:.0f} MB, "
                "XWP_WORKSPACES_TOTAL_MB); this model stays in this browser tab only. Delete saved work or try later"
            )

    def _new_item(self, sub: str) -> str:
        """A fresh item id not used in ``sub``."""
        while True:
            item = secrets.token_hex(8)
            if not (self.path / sub / f"{item}.json").exists():
                return item

    # ------------------------------------------------------------------ models

    def save_model(
        self,
        model: torch.nn.Module,
        meta: dict[str, Any],
        name: str,
        snapshots: dict[int, np.ndarray] | None = None,
        has_initial: bool = True,
    ) -> ModelEntry:
        """Store ``model`` (an ``xwp.MLP``) with ``meta`` and optional first-layer ``snapshots`` (epoch -> array).

        ``has_initial=False`` (a checkpoint uploaded without its initial state) stores no
        initial state: the model's seed-made initial buffers are not the ones it was trained
        from, and XWP on them would be wrong. Raises :class:`WorkspaceFull` (nothing written)
        when the workspace has no room.
        """
        name = clean_name(name)
        data = checkpoint_bytes(model, {**meta, "name": name}, initial=has_initial)
        snap = snapshot_bytes(snapshots) if snapshots else None
        history = meta.get("history") if isinstance(meta.get("history"), dict) else None
        acc = meta.get("test_accuracy")
        sizes = getattr(model, "sizes", None)
        entry = {
            "name": name,
            "dataset": clean_name(meta.get("dataset") or "unknown"),
            "arch": "-".join(str(int(s)) for s in sizes) if sizes else "?",
            "accuracy": float(acc) if isinstance(acc, int | float) else None,
            "created": time.time(),
            "history": history,
        }
        text = json_bytes(entry)
        if len(text) > MAX_JSON:
            entry["history"] = None  # a pathological history: keep the model, drop its curves
            text = json_bytes(entry)
        with self._locked():
            self._check_room(len(data) + len(text) + (len(snap) if snap else 0), "model", len(self._ids("models")))
            d = self._dir("models")
            mid = self._new_item("models")
            atomic_write(d / f"{mid}.safetensors", data)
            if snap:
                atomic_write(d / f"{mid}.snapshots.safetensors", snap)
            atomic_write(d / f"{mid}.json", text)  # last: its presence commits the model
        self.touch(force=True)
        return self._model_entry(mid)

    def _ids(self, sub: str) -> list[str]:
        """Ids of the committed items (those with a ``.json`` entry) in ``sub``."""
        d = self.path / sub
        if not d.is_dir() or d.is_symlink():
            return []
        out = []
        for p in d.iterdir():
            stem = p.name[: -len(".json")] if p.name.endswith(".json") else None
            if stem and ITEM_RE.match(stem):
                out.append(stem)
        return out

    def _model_entry(self, mid: str) -> ModelEntry:
        """The validated listing of model ``mid``."""
        d = self.path / "models"
        e = read_json(d / f"{mid}.json")
        ckpt = d / f"{mid}.safetensors"
        if not ckpt.is_file() or ckpt.is_symlink():
            raise XWPError(f"model {mid} has no checkpoint")
        acc = e.get("accuracy")
        return ModelEntry(
            id=mid,
            name=clean_name(e.get("name", "model")),
            dataset=clean_name(e.get("dataset", "unknown")),
            arch=clean_name(e.get("arch", "?")),
            accuracy=float(acc) if isinstance(acc, int | float) and 0.0 <= acc <= 1.0 else None,
            created=created_time(e),
            bytes=file_size(ckpt) + file_size(d / f"{mid}.json") + file_size(d / f"{mid}.snapshots.safetensors"),
            epochs=len((parse_history(e.get("history")) or {}).get("loss", [])),
            has_snapshots=(d / f"{mid}.snapshots.safetensors").is_file(),
        )

    def models(self) -> list[ModelEntry]:
        """The stored models, oldest first; damaged or half-written entries are skipped."""
        out = []
        for mid in self._ids("models"):
            with contextlib.suppress(XWPError):
                out.append(self._model_entry(mid))
        return sorted(out, key=lambda e: (e.created, e.id))

    def load_model(self, mid: str) -> Checkpoint:
        """Load model ``mid`` through :func:`~xwp.checkpoint.load_checkpoint` (no pickle, checked shapes)."""
        mid = _item_id(mid, "model")
        data = read_regular(self.path / "models" / f"{mid}.safetensors", self.limits.max_bytes)
        self.touch()
        return load_checkpoint(data, require_initial=False)

    def history(self, mid: str) -> dict[str, list[float]] | None:
        """The training history of model ``mid`` (lists of finite numbers per key), or None."""
        mid = _item_id(mid, "model")
        return parse_history(read_json(self.path / "models" / f"{mid}.json").get("history"))

    def snapshots(self, mid: str) -> dict[int, np.ndarray]:
        """First-layer weights per epoch of model ``mid`` (float32), empty if none were kept."""
        mid = _item_id(mid, "model")
        path = self.path / "models" / f"{mid}.snapshots.safetensors"
        if not path.exists():
            return {}
        return snapshots_from_bytes(read_regular(path, self.limits.max_bytes))

    def delete_model(self, mid: str) -> None:
        """Remove model ``mid`` (its entry first, so it vanishes from every listing at once)."""
        mid = _item_id(mid, "model")
        d = self.path / "models"
        with self._locked():
            for suffix in (".json", ".safetensors", ".snapshots.safetensors"):
                (d / f"{mid}{suffix}").unlink(missing_ok=True)

    # ------------------------------------------------------------------ comparisons

    def save_comparison(
        self,
        name: str,
        tables: dict[str, pd.DataFrame],
        arrays: dict[str, np.ndarray] | None = None,
        info: dict[str, Any] | None = None,
    ) -> ComparisonEntry:
        """Store a comparison: ``tables`` as CSV, ``arrays`` as safetensors, ``info`` as JSON (no pickle)."""
        files, text = encode_comparison(clean_name(name), tables, arrays, info)
        with self._locked():
            self._check_room(len(text) + sum(map(len, files.values())), "comparison", len(self._ids("comparisons")))
            d = self._dir("comparisons")
            cid = self._new_item("comparisons")
            for suffix, data in files.items():
                atomic_write(d / f"{cid}.{suffix}", data)
            atomic_write(d / f"{cid}.json", text)  # last: its presence commits the comparison
        self.touch(force=True)
        return self._comparison_entry(cid)

    def _comparison_files(self, cid: str) -> list[Path]:
        """Every file of comparison ``cid``."""
        d = self.path / "comparisons"
        return [p for p in d.iterdir() if p.name.startswith(f"{cid}.")] if d.is_dir() else []

    def _comparison_entry(self, cid: str) -> ComparisonEntry:
        """The validated listing of comparison ``cid``."""
        e = read_json(self.path / "comparisons" / f"{cid}.json")
        info = e.get("info") if isinstance(e.get("info"), dict) else {}
        return ComparisonEntry(
            id=cid,
            name=clean_name(e.get("name", "comparison")),
            model=clean_name(info.get("model", "")) if info.get("model") else "",
            created=created_time(e),
            bytes=sum(file_size(p) for p in self._comparison_files(cid)),
        )

    def comparisons(self) -> list[ComparisonEntry]:
        """The stored comparisons, oldest first; damaged entries are skipped."""
        out = []
        for cid in self._ids("comparisons"):
            with contextlib.suppress(XWPError):
                out.append(self._comparison_entry(cid))
        return sorted(out, key=lambda e: (e.created, e.id))

    def load_comparison(self, cid: str) -> Comparison:
        """Read comparison ``cid`` back (CSV through pandas, arrays through safetensors; sizes capped)."""
        cid = _item_id(cid, "comparison")
        d = self.path / "comparisons"
        e = read_json(d / f"{cid}.json")
        tables = {k: decode_table(read_regular(d / f"{cid}.{k}.csv", MAX_CSV), k) for k in table_names(e)}
        path = d / f"{cid}.arrays.safetensors"
        arrays = decode_arrays(read_regular(path, self.limits.max_bytes)) if path.exists() else {}
        self.touch()
        return Comparison(tables, arrays, e.get("info") if isinstance(e.get("info"), dict) else {})

    def delete_comparison(self, cid: str) -> None:
        """Remove comparison ``cid`` (entry first)."""
        cid = _item_id(cid, "comparison")
        with self._locked():
            (self.path / "comparisons" / f"{cid}.json").unlink(missing_ok=True)
            for p in self._comparison_files(cid):
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ housekeeping

    def remove_orphans(self, age_s: float = ORPHAN_AGE_S) -> int:
        """Delete files older than ``age_s`` that belong to no committed entry (a save killed midway)."""
        removed = 0
        now = time.time()
        with self._locked():
            for sub in ("models", "comparisons"):
                d = self.path / sub
                if not d.is_dir() or d.is_symlink():
                    continue
                ids = set(self._ids(sub))
                for p in d.iterdir():
                    if p.name.split(".", 1)[0] in ids and not p.name.startswith("."):
                        continue
                    with contextlib.suppress(OSError):
                        if now - p.lstat().st_mtime > age_s:
                            p.unlink()
                            removed += 1
        return removed

    def delete(self) -> None:
        """Remove the whole workspace."""
        remove_tree(self.path)


# --------------------------------------------------------------------------- opening and expiry

_last_clean: dict[str, float] = {}


def total_usage(root: str | os.PathLike | None = None) -> int:
    """Bytes all workspaces under ``root`` take (only folders named like workspace ids count)."""
    base = Path(root) if root is not None else root_dir()
    if not base.is_dir() or base.is_symlink():
        return 0
    return sum(Workspace(p.name, base).usage() for p in base.iterdir() if valid_id(p.name) and not p.is_symlink())


_clean_lock = threading.Lock()


def cleanup_expired(root: str | os.PathLike | None = None, days: float | None = None) -> list[str]:
    """Delete every workspace not used for ``days`` (``XWP_WORKSPACE_DAYS``); return their ids.

    Only folders whose names are workspace ids are considered; anything else under the
    root is left alone.
    """
    root = Path(root) if root is not None else root_dir()
    days = WorkspaceLimits().days if days is None else days
    if not root.is_dir() or root.is_symlink():
        return []
    cutoff = time.time() - days * 86400.0
    gone = []
    for p in root.iterdir():
        if not valid_id(p.name):
            continue
        ws = Workspace(p.name, root)
        if p.is_symlink() or ws.last_used() < cutoff:
            remove_tree(p)
            gone.append(p.name)
    return gone


def open_workspace(
    wid: str | None, root: str | os.PathLike | None = None, limits: WorkspaceLimits | None = None
) -> tuple[Workspace, bool]:
    """The workspace named by ``wid`` (from the URL), or a new one; returns ``(workspace, is_new)``.

    A missing or malformed id (``"../../etc"``, too long, ...) gives a new id and never
    reaches the file system. Expired workspaces are cleaned at most every 10 minutes per
    root. A well-formed id whose folder is gone (expired, or never saved to) is reused:
    it is the visitor's own link. Creating a new one when :attr:`WorkspaceLimits.max_workspaces`
    exist raises :class:`XWPError`.
    """
    limits = limits or WorkspaceLimits()
    base = Path(root) if root is not None else root_dir()
    with _clean_lock:
        key = str(base)
        if time.time() - _last_clean.get(key, 0.0) > CLEAN_EVERY_S:
            _last_clean[key] = time.time()
            cleanup_expired(base, limits.days)
    if valid_id(wid):
        ws = Workspace(wid, base, limits)  # type: ignore[arg-type]
        if ws.exists():
            ws.touch()
            return ws, False
    else:
        wid = new_id()
    count = sum(1 for p in base.iterdir() if valid_id(p.name)) if base.is_dir() else 0
    if count >= limits.max_workspaces:
        raise XWPError(
            f"the server already keeps {count} workspaces (XWP_WORKSPACES_MAX); your work stays in this "
            "browser tab only until some expire"
        )
    return Workspace(wid, base, limits), True  # type: ignore[arg-type]

"""Reading files that may have been changed by someone else (a shared disk), and writing them as plain data.

Used by :mod:`xwp.serve.workspace`. Reads accept regular files only (no links, FIFOs or
devices: ``O_NOFOLLOW | O_NONBLOCK`` and an ``fstat`` check) up to a size cap; JSON must be
an object; arrays are safetensors (no pickle anywhere).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xwp.errors import XWPError

MAX_JSON = 512 * 1024  # one entry file (a training history included)
MAX_CSV = 32 * 1024 * 1024
TABLE_RE = re.compile(r"\A[a-z0-9_]{1,40}\Z")
MAX_NAME = 120
MAX_SNAPSHOTS = 20


@dataclass(frozen=True)
class ModelEntry:
    """One saved model as listed (from its ``.json`` entry, never from the checkpoint)."""

    id: str
    name: str
    dataset: str
    arch: str
    accuracy: float | None
    created: float
    bytes: int
    epochs: int
    has_snapshots: bool


@dataclass(frozen=True)
class ComparisonEntry:
    """One saved comparison as listed."""

    id: str
    name: str
    model: str
    created: float
    bytes: int


@dataclass
class Comparison:
    """A comparison read back: tables (DataFrames), arrays (numpy) and its JSON facts."""

    tables: dict[str, pd.DataFrame]
    arrays: dict[str, np.ndarray]
    info: dict[str, Any]


def read_regular(path: Path, cap: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) of at most ``cap`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise XWPError(f"{path.name} is no longer in the workspace (deleted in another tab?)") from None
    except OSError:
        raise XWPError(f"{path.name} in the workspace cannot be read") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise XWPError(f"{path.name} in the workspace is not a regular file")
        if st.st_size > cap:
            raise XWPError(f"{path.name} in the workspace is larger than {cap:,} bytes")
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise XWPError(f"{path.name} in the workspace is larger than {cap:,} bytes")
    return data


def read_json(path: Path, cap: int = MAX_JSON) -> dict[str, Any]:
    """A JSON object from a regular file of at most ``cap`` bytes, else :class:`XWPError`."""
    data = read_regular(path, cap)
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise XWPError(f"{path.name} in the workspace is damaged (not JSON)") from None
    if not isinstance(obj, dict):
        raise XWPError(f"{path.name} in the workspace is damaged (not a JSON object)")
    return obj


def json_bytes(obj: Any) -> bytes:
    """Strict JSON (no NaN) as UTF-8 bytes; non-finite floats become null."""
    return json.dumps(finite(obj), allow_nan=False).encode()


def finite(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None and numpy scalars by Python numbers."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)  # anything else (a function given as an option, ...) is kept as its description


def clean_name(name: object) -> str:
    """A display name: a string without control characters, at most :data:`MAX_NAME` characters."""
    text = "".join(ch for ch in str(name) if ch.isprintable()).strip()
    return text[:MAX_NAME] or "model"


def file_size(path: Path) -> int:
    """Size of a regular file (0 when it vanished or is not one)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def remove_tree(path: Path) -> None:
    """Delete ``path`` (a link is unlinked, never followed)."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


SNAPSHOT_NDIMS = (2, 4)  # a dense first layer's (H, D) weights, a convolution's (C1, C, k, k) kernels


def snapshot_bytes(snapshots: dict[int, np.ndarray]) -> bytes:
    """Snapshots (epoch -> first-layer weights: ``(H, D)`` dense, ``(C1, C, k, k)`` conv) as float16 safetensors.

    At most :data:`MAX_SNAPSHOTS`; every one finite.
    """
    from safetensors.numpy import save

    if len(snapshots) > MAX_SNAPSHOTS:
        raise XWPError(f"at most {MAX_SNAPSHOTS} snapshots are kept per model, got {len(snapshots)}")
    arrays = {}
    for epoch, w in snapshots.items():
        a = np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, dtype=np.float32)
        if a.ndim not in SNAPSHOT_NDIMS or not np.isfinite(a).all():
            raise XWPError("a snapshot must be a finite first-layer weight array (2-D dense or 4-D conv)")
        arrays[f"epoch.{int(epoch)}"] = np.clip(a, -65000, 65000).astype(np.float16)
    return save(arrays, metadata={"format": "xwp-snapshots"})


def snapshots_from_bytes(data: bytes) -> dict[int, np.ndarray]:
    """Snapshots read back and checked (keys, count, one shape for all)."""
    from safetensors.numpy import load

    try:
        raw = load(data)
    except Exception:  # safetensors raises its own error types
        raise XWPError("the stored weight snapshots are damaged") from None
    out: dict[int, np.ndarray] = {}
    shapes = set()
    for k, v in raw.items():
        m = re.fullmatch(r"epoch\.(\d{1,4})", k)
        if m is None or v.ndim not in SNAPSHOT_NDIMS:
            raise XWPError("the stored weight snapshots are damaged")
        out[int(m.group(1))] = v.astype(np.float32)
        shapes.add(v.shape)
    if len(out) > MAX_SNAPSHOTS or len(shapes) > 1:
        raise XWPError("the stored weight snapshots are damaged")
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- entries and comparisons


def created_time(entry: dict[str, Any]) -> float:
    """The entry's finite ``created`` time, else :class:`XWPError`."""
    created = entry.get("created")
    if not (isinstance(created, int | float) and math.isfinite(created)):
        raise XWPError("a stored entry is damaged (no creation time)")
    return float(created)


def parse_history(h: object) -> dict[str, list[float]] | None:
    """A training history read back: lists of numbers (non-numbers become NaN) per key, or None."""
    if not isinstance(h, dict):
        return None
    out: dict[str, list[float]] = {}
    for k, v in h.items():
        if isinstance(v, list) and len(v) <= 10_000:
            out[str(k)[:64]] = [float(x) if isinstance(x, int | float) else float("nan") for x in v]
    return out


def encode_comparison(
    name: str, tables: dict[str, Any], arrays: dict[str, np.ndarray] | None, info: dict[str, Any] | None
) -> tuple[dict[str, bytes], bytes]:
    """The files of a comparison (suffix -> bytes: ``<table>.csv``, ``arrays.safetensors``) and its JSON entry."""
    import time

    from safetensors.numpy import save

    for key in [*tables, *(arrays or {})]:
        if not (isinstance(key, str) and TABLE_RE.match(key)):
            raise XWPError(f"table/array names are lowercase words, got {key!r}")
    files = {f"{k}.csv": t.to_csv(index=True).encode() for k, t in tables.items()}
    if arrays:
        files["arrays.safetensors"] = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    text = json_bytes({"name": name, "created": time.time(), "tables": sorted(tables), "info": info or {}})
    if len(text) > MAX_JSON:
        raise XWPError("the comparison's settings are too large to store")
    return files, text


def table_names(entry: dict[str, Any]) -> list[str]:
    """The table names a comparison entry lists, checked (they become file names)."""
    names = entry.get("tables")
    if not (isinstance(names, list) and all(isinstance(n, str) and TABLE_RE.match(n) for n in names)):
        raise XWPError("the stored comparison is damaged (its table list)")
    return names


def decode_table(data: bytes, name: str) -> Any:
    """A stored CSV table as a DataFrame (first column the index)."""
    import io

    import pandas as pd

    try:
        return pd.read_csv(io.BytesIO(data), index_col=0)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        raise XWPError(f"the stored comparison's table {name} is damaged") from None


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Stored arrays (safetensors) read back."""
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception:  # safetensors raises its own error types
        raise XWPError("the stored comparison's arrays are damaged") from None


# --------------------------------------------------------------------------- evaluations


def evaluation_parts(
    ev: Any, predictions: np.ndarray | None = None, **info: Any
) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray], dict[str, Any]]:
    """An :class:`xwp.evaluation.Evaluation` as (tables, arrays, info) for ``Workspace.save_comparison``.

    Curve keys (method, output, removal, curve name) go into ``info`` and arrays are keyed by
    position (``curve_0_1``, ...), so no method name becomes a file or key name. ``info`` may
    carry the app's facts (model name, dataset label, seconds).
    """
    arrays: dict[str, np.ndarray] = {}
    curve_keys = []
    for k, (key, named) in enumerate(ev.curves.items()):
        names = list(named)
        curve_keys.append([*map(str, key), names])
        for j, name in enumerate(names):
            arrays[f"curve_{k}_{j}"] = np.asarray(named[name], dtype=np.float32)
    ex = ev.examples or {}
    example_methods = list(ex.get("attributions", {}))
    for k, m in enumerate(example_methods):
        arrays[f"example_{k}"] = np.asarray(ex["attributions"][m], dtype=np.float32)
    if "images" in ex:
        arrays["example_images"] = np.asarray(ex["images"], dtype=np.float32)
        arrays["example_labels"] = np.asarray(ex["labels"], dtype=np.int64)
    if predictions is not None:
        arrays["predictions"] = np.asarray(predictions, dtype=np.int64)
    meta = {
        **info,
        "curves": curve_keys,
        "example_methods": example_methods,
        "classes": [str(c) for c in ex.get("classes", [])],
        "settings": ev.settings,
    }
    return {"per_image": ev.per_image}, arrays, meta


def evaluation_from(comparison: Comparison) -> tuple[Any, np.ndarray | None]:
    """The :class:`xwp.evaluation.Evaluation` (and predictions, if saved) of a stored comparison."""
    from xwp.evaluation.protocol import Evaluation

    info, arrays = comparison.info, comparison.arrays
    try:
        curves = {}
        for k, (method, output, removal, names) in enumerate(info["curves"]):
            curves[(str(method), str(output), str(removal))] = {
                str(name): arrays[f"curve_{k}_{j}"] for j, name in enumerate(names)
            }
        example_methods = [str(m) for m in info.get("example_methods", [])]
        examples: dict[str, Any] = {
            "attributions": {m: arrays[f"example_{k}"] for k, m in enumerate(example_methods)},
            "classes": [str(c) for c in info.get("classes", [])],
        }
        if "example_images" in arrays:
            examples.update(images=arrays["example_images"], labels=arrays["example_labels"])
        per_image = comparison.tables["per_image"]
        if "correct" in per_image:
            per_image["correct"] = per_image["correct"].astype(bool)
        ev = Evaluation(per_image, curves, examples, dict(info.get("settings") or {}))
    except (KeyError, TypeError, ValueError):
        raise XWPError("the stored comparison is damaged (its methods and arrays disagree)") from None
    return ev, arrays.get("predictions")

"""The app's side of the threat model: data folders visitors may use, uploads, plain text and the session's memory.

The operator is trusted; visitors, what they type and upload, and every checkpoint's metadata
are not (README, "Many users, bad inputs, bounded memory"). Here:

- start-up folders (``streamlit run streamlit_app.py -- --data-dir DIR``) are registered with
  :func:`xwp.config.register_data_dir`; every typed path goes through
  :func:`xwp.config.allowed_data_path`; a model's test images come from the folder it was
  trained from in this session, else the operator's folders, never from its metadata;
- uploads are checked (:func:`xwp.serve.uploads.check_upload`) before they are parsed; an uploaded
  TMNIST CSV is parsed in memory (nothing on disk) into a small cache shared by content hash;
- :func:`md` makes file-borne text (class names, dataset and upload names) safe in Markdown;
- :func:`session_bytes` measures what a session holds, for the bound in docs/app.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from xwp.app.keys import SOURCES_KEY
from xwp.config import allowed_data_dirs, allowed_data_path, cache_dir, register_data_dir
from xwp.data.datasets import ImageSet, tmnist_split
from xwp.data.files import read_tmnist_csv
from xwp.errors import XWPError
from xwp.safety import is_regular_file, plain_text
from xwp.serve.uploads import check_upload

DATA_DIR_FLAG = "--data-dir"
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
MAX_SCAN = 200  # entries looked at per allowed folder when listing dataset folders


# --------------------------------------------------------------------------- start-up folders


def register_startup_dirs(argv: Sequence[str] | None = None) -> list[Path]:
    """Allow every ``--data-dir DIR`` (or ``--data-dir=DIR``) of the app's command line as a data folder.

    ``streamlit run streamlit_app.py -- --data-dir DIR`` passes the arguments after ``--``
    to the script; ``XWP_DATA_DIRS`` (read on every use) adds more. Folders that do not exist
    are skipped with a note on stderr (only the operator sees it).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    found = []
    for i, arg in enumerate(args):
        if arg == DATA_DIR_FLAG and i + 1 < len(args):
            found.append(args[i + 1])
        elif arg.startswith(DATA_DIR_FLAG + "="):
            found.append(arg.split("=", 1)[1])
    registered = []
    for folder in found:
        if Path(folder).is_dir():
            register_data_dir(folder)
            registered.append(Path(folder).resolve())
        else:
            print(f"xwp: --data-dir {folder} is not a folder; ignored", file=sys.stderr)
    return registered


_started: list[Path] | None = None


def startup() -> list[Path]:
    """Register the start-up folders and remove old stored uploads, once per server process.

    streamlit_app.py calls it on every run; only the first call does anything.
    """
    global _started
    if _started is None:
        _started = register_startup_dirs()
        remove_old_uploads()
    return _started


_OLD_UPLOAD = re.compile(r"^[0-9a-f]{20}(\.csv|\.csv\.gz|\.safetensors)$")


def remove_old_uploads() -> list[Path]:
    """Delete ``CACHE/uploads/<hash>.csv*`` files: older versions kept every TMNIST upload there forever."""
    folder = cache_dir() / "uploads"
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if _OLD_UPLOAD.match(path.name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


# --------------------------------------------------------------------------- data folders


def _holds(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds the files of dataset ``name`` (torchvision layout or TMNIST_Data.csv)."""
    if name == "tmnist":
        return is_regular_file(folder / "TMNIST_Data.csv")
    sub = TORCHVISION_FOLDERS.get(name)
    if sub is None:
        return False
    raw = folder / sub / "raw"
    return any(is_regular_file(raw / f"t10k-images-idx3-ubyte{ext}") for ext in (".gz", ""))


def dataset_folders(name: str) -> list[str]:
    """Folders inside the allowed data folders (each one and its direct subfolders) that hold dataset ``name``."""
    if name not in TORCHVISION_FOLDERS and name != "tmnist":
        return []
    found = []
    for root in allowed_data_dirs():
        try:
            with os.scandir(root) as entries:
                subs = sorted(Path(e.path) for e in itertools.islice(entries, MAX_SCAN) if e.is_dir())
        except OSError:
            continue
        found += [str(p) for p in (root, *subs) if _holds(p, name)]
    return list(dict.fromkeys(found))


def visitor_path(text: str | None) -> str | None:
    """A folder or file a visitor typed, resolved inside the allowed data folders (None if empty; XWPError outside)."""
    if text is None or not str(text).strip():
        return None
    return str(allowed_data_path(str(text).strip()))


def remember_source(uid: str, source: tuple[str, str] | None) -> None:
    """Remember where the test images of this session's model ``uid`` come from (a folder or an upload)."""
    if source is not None:
        st.session_state.setdefault(SOURCES_KEY, {})[uid] = source


def test_source(uid: str, dataset: str) -> tuple[str, str | None]:
    """Where the test images of a model come from: this session's record, else the operator's first folder.

    Never the model's metadata: a checkpoint cannot name a server path.
    """
    source = st.session_state.get(SOURCES_KEY, {}).get(uid)
    if source is not None:
        return source
    folders = dataset_folders(dataset)
    return ("folder", folders[0] if folders else None)


def forget_sources(keep: Sequence[str]) -> None:
    """Drop the records of models no longer in this session (``keep``: the uids still there)."""
    sources = st.session_state.get(SOURCES_KEY)
    if sources:
        for uid in [u for u in sources if u not in set(keep)]:
            del sources[uid]


# --------------------------------------------------------------------------- uploads


@st.cache_resource(show_spinner=False, max_entries=2)
def _upload_rows(digest: str, _data: bytes | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parsed rows of an uploaded TMNIST CSV (shared by content hash; at most 2 kept)."""
    if _data is None:
        raise XWPError("the uploaded TMNIST file is no longer in memory; upload it again")
    return read_tmnist_csv(_data)


@st.cache_resource(show_spinner=False, max_entries=4)
def upload_split(digest: str, split: str) -> ImageSet:
    """One split of an uploaded TMNIST CSV, made once and shared read-only (at most 4 kept)."""
    return tmnist_split(*_upload_rows(digest, None), split=split, info={"file": "(upload)"})


def tmnist_upload_sets(data: bytes, name: str) -> tuple[ImageSet, ImageSet, str]:
    """Train and test split of an uploaded TMNIST CSV, checked first and parsed in memory; and its digest."""
    check_upload(data, "csv", name)
    digest = hashlib.sha256(data).hexdigest()
    _upload_rows(digest, data)
    return upload_split(digest, "train"), upload_split(digest, "test"), digest


def upload_test_set(digest: str) -> ImageSet:
    """The test split of an uploaded TMNIST CSV this session trained on (XWPError once it left the cache)."""
    return upload_split(digest, "test")


# --------------------------------------------------------------------------- text and memory

#: float32 bytes a session model costs per parameter: the trained weights, the initial weights the
#: model keeps as buffers, and the initial copy XWP compares with (its parameters and buffers)
BYTES_PER_PARAMETER = 16


def model_bytes(parameters: int) -> int:
    """RAM a session model with ``parameters`` weights and biases costs (see :data:`BYTES_PER_PARAMETER`)."""
    return BYTES_PER_PARAMETER * parameters


def md(value: object, limit: int = 200) -> str:
    """File-borne text (class names, dataset, model and upload names) escaped so Markdown shows it as typed."""
    return plain_text(value, limit)


def size_of(obj: Any, _seen: set | None = None) -> int:
    """Bytes of the tensors, arrays and bytes reachable from ``obj`` (containers, dataclasses, objects).

    Each tensor storage and buffer is counted once, so a model shared by two keys counts once.
    """
    seen = set() if _seen is None else _seen
    total, stack = 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            key = ("t", item.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += item.untyped_storage().nbytes()
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, bytes | bytearray):
            total += len(item)
        elif isinstance(item, io.BytesIO):  # an uploaded file a widget holds
            total += item.getbuffer().nbytes
        elif isinstance(item, np.ndarray):
            total += item.nbytes
        elif isinstance(item, torch.nn.Module):
            stack.extend(item.state_dict(keep_vars=True).values())
            stack.extend(v for v in vars(item).values() if not isinstance(v, dict))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())
    return total


def session_bytes(state: Any) -> int:
    """Bytes of tensors, arrays and buffers held by a session's state (``st.session_state`` or its dict)."""
    keys = list(state.keys()) if hasattr(state, "keys") else []
    return size_of({k: state[k] for k in keys})

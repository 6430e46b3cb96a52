"""Checkpoints as safetensors files: trained and initial weights plus JSON metadata.

safetensors holds raw tensors and a JSON header, nothing executable, so a checkpoint
from a stranger cannot run code; pickles (``torch.save`` files) are refused outright.
Writes go through a temporary file and an atomic rename.
"""

from __future__ import annotations

import json
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xwp.config import atomic_write
from xwp.errors import XWPError
from xwp.models import CNN, MLP, build_model

FORMAT = "xwp-checkpoint"
VERSION = 1
MAX_HEADER = 16 * 1024 * 1024
MAX_BYTES = 2 * 1024**3


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: MLP | CNN
    initial_model: MLP | CNN | None
    meta: dict[str, Any]


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    import xwp

    out = {"xwp": xwp.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import captum

        out["captum"] = captum.__version__
    except ImportError:
        pass
    return out


def checkpoint_bytes(model: MLP | CNN, meta: dict[str, Any] | None = None) -> bytes:
    """Serialise ``model`` (trained and initial weights) and ``meta`` to safetensors bytes."""
    from safetensors.torch import save

    if not isinstance(model, MLP | CNN):
        raise XWPError("only xwp.MLP and xwp.CNN models can be saved (they carry their initial state)")
    meta = dict(meta or {})
    meta.pop("sizes", None)
    meta.update({**model.arch(), "init": model.init, "seed": model.seed, "versions": versions()})
    tensors = {f"trained.{k}": v.detach().cpu().float().contiguous() for k, v in model.net.state_dict().items()}
    tensors.update({f"initial.{k}": v.detach().cpu().float().contiguous() for k, v in model.initial_state().items()})
    header = {"format": FORMAT, "version": str(VERSION), "meta": json.dumps(meta, default=_json_default)}
    return save(tensors, metadata=header)


def _json_default(obj: Any) -> Any:
    """JSON for tensors, numpy scalars and other simple objects found in metadata."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return str(obj)


def save_checkpoint(path: str | os.PathLike, model: MLP | CNN, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and ``meta`` to ``path`` atomically (no partial file is ever visible).

    Args:
        path: destination, conventionally ``*.safetensors``.
        model: an ``xwp.MLP`` or ``xwp.CNN``; its initial state is saved with it, and its
            architecture goes into the metadata (``arch`` plus its sizes, see ``model.arch()``).
        meta: JSON-friendly facts (dataset, epochs, accuracy, history, ...).
    """
    path = Path(path)
    data = checkpoint_bytes(model, meta)
    if not path.parent.exists():
        raise XWPError(f"folder {path.parent} does not exist")
    try:
        atomic_write(path, data)
    except OSError as e:
        raise XWPError(f"cannot write {path}: {e.strerror}") from None
    return path


def _read_source(source: str | os.PathLike | bytes) -> bytes:
    """Bytes of a checkpoint given as a path or as bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise XWPError(f"checkpoint {path} does not exist")
    if path.stat().st_size > MAX_BYTES:
        raise XWPError(f"checkpoint {path} is larger than {MAX_BYTES // 1024**3} GiB")
    return path.read_bytes()


def _looks_like_pickle(data: bytes) -> bool:
    """A pickle of protocol 2-5 or a zip archive (``torch.save``'s format)."""
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:4] == b"PK\x03\x04"


def _header(data: bytes) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header without touching any tensor."""
    if len(data) < 8:
        raise XWPError("not an xwp checkpoint: the file is empty or truncated")
    (n,) = struct.unpack("<Q", data[:8])
    header = None
    if 2 <= n <= MAX_HEADER and 8 + n <= len(data):
        try:
            header = json.loads(data[8 : 8 + n])
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        if _looks_like_pickle(data):
            raise XWPError(
                "this is a PyTorch pickle/zip file, not an xwp checkpoint; pickles can run code when loaded, "
                "so xwp refuses them (xwp checkpoints are .safetensors files written by xwp)"
            )
        if n > MAX_HEADER or n < 2:
            raise XWPError("not an xwp checkpoint (no safetensors header)")
        if 8 + n > len(data):
            raise XWPError("the checkpoint is truncated (its header runs past the end of the file)")
        raise XWPError("not an xwp checkpoint (its header is not a JSON table)")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        raise XWPError("not an xwp checkpoint (malformed tensor table)") from None
    if 8 + n + end > len(data):
        raise XWPError(f"the checkpoint is truncated: {len(data)} bytes, {8 + n + end} expected")
    return header


def load_checkpoint(
    source: str | os.PathLike | bytes, require_initial: bool = True, device: str | torch.device | None = None
) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (a path or the file's bytes).

    Returns a :class:`Checkpoint` with ``.model`` (trained, eval mode), ``.initial_model``
    (same architecture at its initial weights) and ``.meta``. A pickle, a truncated or
    foreign file, or one without the initial state (with ``require_initial``) raises
    :class:`~xwp.errors.XWPError` without executing anything from the file.
    """
    from safetensors.torch import load

    data = _read_source(source)
    header = _header(data)
    info = header.get("__metadata__") or {}
    if info.get("format") != FORMAT:
        raise XWPError("this safetensors file is not an xwp checkpoint (no xwp metadata)")
    try:
        meta = json.loads(info.get("meta", "{}"))
    except (json.JSONDecodeError, TypeError, ValueError, RecursionError):
        raise XWPError("the checkpoint's metadata is damaged (not JSON)") from None
    if not isinstance(meta, dict) or ("sizes" not in meta and "arch" not in meta):
        raise XWPError("the checkpoint's metadata is damaged (no valid layer sizes)")
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types
        raise XWPError(f"the checkpoint's tensors cannot be read ({type(e).__name__}); the file is damaged") from None
    try:
        model = build_model(meta, seed=meta.get("seed", 0), init=meta.get("init", "torch"))
    except XWPError as e:
        raise XWPError(f"the checkpoint's architecture is invalid: {e}") from None
    trained = _take(tensors, "trained.", model)
    model.net.load_state_dict(trained)
    initial = _take(tensors, "initial.", model, missing_ok=not require_initial)
    if initial is not None:  # None only when missing_ok (else _take raised)
        model.set_initial_state(initial)
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, model.initial_model() if initial is not None else None, meta)


def _take(tensors: dict[str, torch.Tensor], prefix: str, model: MLP | CNN, missing_ok: bool = False) -> dict | None:
    """The tensors under ``prefix``, checked against the model's parameter shapes."""
    expected = dict(model.net.named_parameters())
    got = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not got and missing_ok:
        return None
    what = "initial state (XWP needs it; retrain with xwp to get one)" if prefix == "initial." else "trained weights"
    missing = [k for k in expected if k not in got]
    if missing:
        raise XWPError(f"the checkpoint has no {what}: {', '.join(missing)} missing")
    for k, p in expected.items():
        if tuple(got[k].shape) != tuple(p.shape):
            raise XWPError(
                f"{prefix}{k} has shape {tuple(got[k].shape)}, but the architecture "
                f"{model.describe()} needs {tuple(p.shape)}"
            )
        if not torch.isfinite(got[k]).all():
            raise XWPError(f"{prefix}{k} contains NaN or infinite values")
    return {k: got[k].float() for k in expected}

"""Checkpoints as safetensors files: trained and initial weights plus JSON metadata.

safetensors holds raw tensors and a JSON header, nothing executable, so a checkpoint
from a stranger cannot run code; pickles (``torch.save`` files) are refused outright.
Writes go through a temporary file and an atomic rename.
"""

from __future__ import annotations

import json
import math
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xwp._version import __version__
from xwp.config import LIMITS, atomic_write
from xwp.data.images import IMAGE_SHAPE
from xwp.errors import XWPError
from xwp.models import CNN, CNN_KEYS, INITS, MLP, arch_io, build_model, check_arch, describe_arch, param_shapes
from xwp.safety import json_depth, read_regular

FORMAT = "xwp-checkpoint"
VERSION = 1
MAX_HEADER = 16 * 1024 * 1024
MAX_BYTES = 2 * 1024**3
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
SERVER_KEYS = ("data_dir",)
"""Metadata keys that name server paths: never written, dropped on load (metadata never selects a path)."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: MLP | CNN
    initial_model: MLP | CNN | None
    meta: dict[str, Any]


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    out = {"xwp": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import captum

        out["captum"] = captum.__version__
    except ImportError:
        pass
    return out


def checkpoint_bytes(model: MLP | CNN, meta: dict[str, Any] | None = None, initial: bool = True) -> bytes:
    """Serialise ``model`` (trained and initial weights), its architecture and ``meta`` to safetensors bytes.

    ``initial=False`` leaves the initial state out: for a model whose initial buffers are
    not the ones it was trained from (a checkpoint uploaded without them), where XWP on
    them would be wrong.
    """
    from safetensors.torch import save

    if not isinstance(model, MLP | CNN):
        raise XWPError("only xwp.MLP and xwp.CNN models can be saved (they carry their initial state)")
    meta = {k: v for k, v in (meta or {}).items() if k not in ("arch", "sizes", *CNN_KEYS)}
    meta.update({**model.arch(), "init": model.init, "seed": model.seed, "versions": versions()})
    tensors = {f"trained.{k}": v.detach().cpu().float().contiguous() for k, v in model.net.state_dict().items()}
    if initial:
        tensors.update(
            {f"initial.{k}": v.detach().cpu().float().contiguous() for k, v in model.initial_state().items()}
        )
    for key in SERVER_KEYS:
        meta.pop(key, None)
    text = json.dumps(meta, default=_json_default)
    parse_meta(text)  # never write what load_checkpoint would refuse
    header = {"format": FORMAT, "version": str(VERSION), "meta": text}
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
    """Bytes of a checkpoint given as a path (a regular file) or as bytes (not copied)."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, bytearray | memoryview):
        return bytes(source)
    if not isinstance(source, str | os.PathLike):
        raise XWPError(f"a checkpoint is a path or bytes, got {type(source).__name__}")
    return read_regular(source, "checkpoint", MAX_BYTES)


def parse_meta(text: object) -> dict[str, Any]:
    """The checkpoint's metadata JSON, checked: size, nesting, the architecture and every size it declares.

    The architecture is ``arch`` (``"mlp"`` with ``sizes``, or ``"cnn"`` with its sizes; no
    ``arch``: an MLP written before CNNs existed), validated by :func:`xwp.models.check_arch`
    against the limits before anything is built; the result holds the normalised sizes.
    """
    if not isinstance(text, str):
        raise XWPError("the checkpoint's metadata is damaged (not a JSON text)")
    if len(text) > LIMITS.max_meta_bytes:
        raise XWPError(f"the checkpoint's metadata is larger than {LIMITS.max_meta_bytes // 1024} kB (XWP_MAX_META_KB)")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise XWPError("the checkpoint's metadata is damaged (not valid JSON)") from None
    if not isinstance(meta, dict):
        raise XWPError("the checkpoint's metadata is damaged (not a JSON object)")
    if json_depth(meta, LIMITS.max_meta_depth) > LIMITS.max_meta_depth:
        raise XWPError(f"the checkpoint's metadata is nested more than {LIMITS.max_meta_depth} levels deep")
    if meta.get("arch", "mlp") == "mlp":
        sizes = meta.get("sizes")
        if not isinstance(sizes, list) or not all(type(v) is int for v in sizes):
            raise XWPError("the checkpoint's metadata is damaged (no valid layer sizes)")
        if sizes and sizes[0] != math.prod(IMAGE_SHAPE):
            raise XWPError(
                f"the checkpoint's input size is {sizes[0]}; xwp models take 28x28 = {math.prod(IMAGE_SHAPE)} pixels"
            )
        if sizes and sizes[-1] > LIMITS.max_classes:
            raise XWPError(
                f"the checkpoint has {sizes[-1]} classes; the limit is {LIMITS.max_classes} (XWP_MAX_CLASSES)"
            )
    try:
        arch = check_arch(meta)
    except XWPError as e:
        raise XWPError(f"the checkpoint's architecture is invalid: {e}") from None
    in_shape, n_classes = arch_io(arch)
    if in_shape not in ((math.prod(IMAGE_SHAPE),), IMAGE_SHAPE):
        shape = "x".join(map(str, in_shape))
        raise XWPError(f"the checkpoint's input is {shape}; xwp models take 28x28 = {math.prod(IMAGE_SHAPE)} pixels")
    if n_classes > LIMITS.max_classes:
        raise XWPError(f"the checkpoint has {n_classes} classes; the limit is {LIMITS.max_classes} (XWP_MAX_CLASSES)")
    meta.update(arch)
    seed = meta.get("seed", 0)
    if type(seed) is not int or not 0 <= seed <= LIMITS.max_seed:
        raise XWPError(f"the checkpoint's seed must be a whole number in 0..2**63-1, got {str(seed)[:40]!r}")
    if meta.get("init", "torch") not in INITS:
        raise XWPError(f"the checkpoint's init must be one of {', '.join(INITS)}")
    for key in ("dataset", "upload_name"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 200):
            raise XWPError(f"the checkpoint's {key} must be a short text")
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) and len(c) <= 200 for c in classes):
            raise XWPError("the checkpoint's class names must be a list of short texts")
        if len(classes) != n_classes:
            raise XWPError(f"the checkpoint names {len(classes)} classes but its output layer has {n_classes}")
    for key in SERVER_KEYS:
        meta.pop(key, None)
    return meta


def _looks_like_pickle(data: bytes) -> bool:
    """A pickle of protocol 2-5 or a zip archive (``torch.save``'s format)."""
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:4] == b"PK\x03\x04"


def read_header(data: bytes) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header without touching any tensor."""
    if len(data) < 8:
        raise XWPError("not an xwp checkpoint: the file is empty or truncated")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    header = None
    if 2 <= n <= MAX_HEADER and 8 + n <= len(data):
        try:
            header = json.loads(data[8 : 8 + n])
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
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
    if "__metadata__" in header and not isinstance(header["__metadata__"], dict):
        raise XWPError("not an xwp checkpoint (its __metadata__ is not a JSON object)")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
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
    data = _read_source(source)
    header = read_header(data)
    info = header.get("__metadata__") or {}
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise XWPError("this safetensors file is not an xwp checkpoint (no xwp metadata)")
    if info.get("version") != str(VERSION):
        raise XWPError(f"this checkpoint has format version {str(info.get('version'))[:20]!r}; xwp reads {VERSION}")
    meta = parse_meta(info.get("meta"))
    _check_table(header, meta)  # names, dtypes and shapes, before any tensor is built
    model = build_model(meta, seed=meta.get("seed", 0), init=meta.get("init", "torch"))
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    trained = _fill(model, header, data, start, "trained.")
    initial = _fill(model, header, data, start, "initial.", missing_ok=not require_initial)
    del data
    if not trained:
        raise XWPError("the checkpoint has no trained weights")
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, model.initial_model() if initial else None, meta)


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _fill(
    model: MLP | CNN, header: dict[str, Any], data: bytes, start: int, prefix: str, missing_ok: bool = False
) -> bool:
    """Copy the tensors under ``prefix`` straight from the file's bytes into the model (no intermediate copies).

    Each tensor is a zero-copy view of ``data`` (little-endian, as safetensors stores it),
    checked for NaN/inf and copied into the parameter (``trained.``) or the stored initial
    state (``initial.``). Returns False when there is none and ``missing_ok``.
    """
    import warnings

    params = dict(model.net.named_parameters())
    names = [k for k in params if f"{prefix}{k}" in header]
    if not names and missing_ok:
        return False
    what = "initial state (XWP needs it; retrain with xwp to get one)" if prefix == "initial." else "trained weights"
    missing = [k for k in params if k not in names]
    if missing:
        raise XWPError(f"the checkpoint has no {what}: {', '.join(missing)} missing")
    initial = model.initial_state()
    for k, p in params.items():
        entry = header[f"{prefix}{k}"]
        dtype = _DTYPES[entry["dtype"]]
        begin, end = (int(v) for v in entry["data_offsets"])
        count = p.numel()
        if end - begin != count * dtype.itemsize or begin < 0:
            raise XWPError(f"{prefix}{k} has {end - begin} bytes for {count} values; the file is damaged")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only buffer: the view is only read from
            view = torch.frombuffer(data, dtype=dtype, count=count, offset=start + begin).view(p.shape)
        if not torch.isfinite(view).all():
            raise XWPError(f"{prefix}{k} contains NaN or infinite values")
        with torch.no_grad():
            (p if prefix == "trained." else initial[k]).copy_(view)
    return True


def _check_table(header: dict[str, Any], arch: dict[str, Any]) -> None:
    """Refuse unknown tensor names, non-float dtypes (float8, ints) and wrong shapes from the header alone."""
    expected = param_shapes(arch)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        prefix, _, key = name.partition(".")
        if prefix not in ("trained", "initial") or key not in expected or not isinstance(entry, dict):
            raise XWPError(f"the checkpoint holds an unexpected tensor {name[:60]!r}; the file is not from xwp")
        if entry.get("dtype") not in FLOAT_DTYPES:
            raise XWPError(
                f"{name} has dtype {str(entry.get('dtype'))[:20]}; xwp checkpoints hold float32/16/64 or bfloat16"
            )
        if entry.get("shape") != expected[key]:
            raise XWPError(
                f"{name} has shape {tuple(entry.get('shape') or ())}, but the architecture "
                f"{describe_arch(arch)} needs {tuple(expected[key])}"
            )

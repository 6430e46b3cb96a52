"""Checkpoints: round trip, refusal of pickles, truncated and foreign files, atomic writes."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch

import xwp
from xwp.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint


def trained_small():
    m = xwp.MLP((784, 32, 10), seed=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1)
    return m


def test_round_trip(tmp_path):
    m = trained_small()
    meta = {"dataset": "typeface", "epochs": 2, "test_accuracy": 0.9, "history": {"loss": [1.0, 0.5]}}
    path = save_checkpoint(tmp_path / "m.safetensors", m, meta)
    ck = load_checkpoint(path)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(ck.model(x), m(x))
    for k, v in m.initial_state().items():
        torch.testing.assert_close(ck.model.initial_state()[k], v)
        torch.testing.assert_close(dict(ck.initial_model.net.named_parameters())[k], v)
    assert not ck.model.training
    assert ck.meta["dataset"] == "typeface" and ck.meta["history"]["loss"] == [1.0, 0.5]
    assert ck.meta["sizes"] == [784, 32, 10] and ck.meta["seed"] == 3
    assert {"torch", "xwp", "python"} <= set(ck.meta["versions"])
    torch.testing.assert_close(xwp.XWP(ck.model).attribute(x, target=1), xwp.XWP(m).attribute(x, target=1))
    assert load_checkpoint(path.read_bytes()).meta == ck.meta  # bytes (uploads) work too


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_that_runs_code_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"state": Exploit()}, protocol=protocol))
    with pytest.raises(xwp.XWPError):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(trained_small().state_dict(), path)
    with pytest.raises(xwp.XWPError, match="pickle"):
        load_checkpoint(path)


@pytest.mark.parametrize("cut", [0, 4, 9, 100, -10])
def test_truncated_files(tmp_path, cut):
    data = checkpoint_bytes(trained_small(), {})
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(xwp.XWPError, match="truncated|not an xwp checkpoint|empty"):
        load_checkpoint(path)


def test_random_bytes_and_foreign_safetensors(tmp_path):
    with pytest.raises(xwp.XWPError):
        load_checkpoint(os.urandom(4096))
    from safetensors.torch import save

    with pytest.raises(xwp.XWPError, match="not an xwp checkpoint"):
        load_checkpoint(save({"weight": torch.zeros(3)}))
    with pytest.raises(xwp.XWPError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def _rewrite(data: bytes, drop_prefix: str | None = None, reshape: str | None = None) -> bytes:
    from safetensors.torch import load, save

    (n,) = struct.unpack("<Q", data[:8])
    import json

    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = load(data)
    if drop_prefix:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(drop_prefix)}
    if reshape:
        tensors[reshape] = torch.zeros(5, 5)
    return save(tensors, metadata=meta)


def test_checkpoint_without_initial_state():
    data = _rewrite(checkpoint_bytes(trained_small(), {}), drop_prefix="initial.")
    with pytest.raises(xwp.XWPError, match="initial state"):
        load_checkpoint(data)
    ck = load_checkpoint(data, require_initial=False)
    assert ck.initial_model is None


def test_checkpoint_of_another_architecture():
    data = _rewrite(checkpoint_bytes(trained_small(), {}), reshape="trained.0.weight")
    with pytest.raises(xwp.XWPError, match="shape"):
        load_checkpoint(data)


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, trained_small(), {"v": 1})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(xwp.XWPError, match="No space"):
        save_checkpoint(path, xwp.MLP((784, 32, 10), seed=9), {"v": 2})
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_missing_folder(tmp_path):
    with pytest.raises(xwp.XWPError, match="does not exist"):
        save_checkpoint(tmp_path / "nope" / "m.safetensors", trained_small())


def test_header_length_starting_with_the_pickle_byte_still_loads():
    """The header length is little-endian: its first byte may well be 0x80, pickle's first byte."""
    model = trained_small()
    for pad in range(0, 4096):
        data = checkpoint_bytes(model, {"pad": "x" * pad})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    assert load_checkpoint(data).meta["pad"] == "x" * pad


# --------------------------------------------------------------------------- hostile input


def test_save_refuses_metadata_that_load_would_refuse(tmp_path):
    path = tmp_path / "m.safetensors"
    for meta, message in (
        ({"classes": ["a", "b"]}, "names 2 classes"),
        ({"dataset": 5}, "dataset"),
        ({"deep": json.loads("[" * 20 + "]" * 20)}, "nested"),
        ({"note": "x" * (2 * 1024 * 1024)}, "larger than"),
    ):
        with pytest.raises(xwp.XWPError, match=message):
            save_checkpoint(path, trained_small(), meta)
        assert not path.exists() and not list(tmp_path.iterdir())


def test_data_dir_is_never_written_nor_read(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", trained_small(), {"data_dir": "/srv/secret-data"})
    assert b"/srv/secret-data" not in path.read_bytes()
    assert "data_dir" not in load_checkpoint(path).meta


def test_checkpoint_paths_must_be_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo.safetensors")
    with pytest.raises(xwp.XWPError, match="not a regular file"):
        load_checkpoint(tmp_path / "fifo.safetensors")
    with pytest.raises(xwp.XWPError, match="not a regular file"):
        load_checkpoint(tmp_path)


def test_a_killed_save_leaves_no_temporary_forever(tmp_path):
    path = tmp_path / "m.safetensors"
    stale = tmp_path / f".m.safetensors.{12345}.{678}.tmp"  # what a killed writer leaves
    fresh = tmp_path / f".m.safetensors.{12346}.{678}.tmp"  # a write in progress elsewhere
    other = tmp_path / ".notes.tmp"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = os.stat(stale).st_mtime - 3600
    os.utime(stale, (old, old))
    save_checkpoint(path, trained_small())
    assert not stale.exists() and fresh.exists() and other.exists()


def test_loading_copies_little(tmp_path):
    """Peak memory of loading a checkpoint stays within 5x its file size (measured in a fresh process)."""
    import subprocess
    import sys

    path = tmp_path / "big.safetensors"
    path.write_bytes(checkpoint_bytes(xwp.MLP((784, 2048, 2048, 10), seed=0)))
    code = (
        "import resource, sys, xwp\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "xwp.load_checkpoint(sys.argv[1])\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak < 5 * path.stat().st_size, (peak, path.stat().st_size)

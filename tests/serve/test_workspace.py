"""Workspaces: ids, isolation, limits, expiry, concurrent writers and hostile files on disk."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from xwp import MLP
from xwp.errors import XWPError
from xwp.serve.workspace import (
    Workspace,
    WorkspaceFull,
    WorkspaceLimits,
    cleanup_expired,
    new_id,
    open_workspace,
    valid_id,
)


def small_model(seed: int = 0) -> MLP:
    return MLP((784, 16, 10), seed=seed)


def meta(acc: float = 0.9) -> dict:
    return {"dataset": "typeface", "test_accuracy": acc, "history": {"loss": [2.0, 1.0], "test_accuracy": [0.5, acc]}}


@pytest.fixture
def root(tmp_path):
    return tmp_path / "workspaces"


def test_ids_are_unguessable_and_strictly_checked():
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100 and all(valid_id(i) and len(i) == 22 for i in ids)
    for bad in [
        "../../etc",
        "..",
        "",
        "a" * 21,
        "a" * 23,
        "a" * 10_000,
        "abc/def" + "x" * 15,
        "a" * 21 + "\n",
        None,
        5,
    ]:
        assert not valid_id(bad)
        with pytest.raises(XWPError):
            Workspace(bad)  # type: ignore[arg-type]


def test_hostile_ids_never_become_paths(root):
    for bad in ["../../etc", "../" + "a" * 19, "%2e%2e%2f" * 3, "x" * 5000]:
        ws, is_new = open_workspace(bad, root)
        assert is_new and valid_id(ws.id) and ws.id != bad
        assert ws.path.parent == root
    assert not (root.parent / "etc").exists()


def test_save_list_load_delete_roundtrip(root):
    ws, is_new = open_workspace(None, root)
    assert is_new and not ws.exists()  # nothing on disk before the first save
    model = small_model()
    e = ws.save_model(model, meta(0.875), "my model", snapshots={0: np.zeros((16, 784)), 2: np.ones((16, 784))})
    assert (e.name, e.dataset, e.arch, e.accuracy, e.epochs, e.has_snapshots) == (
        "my model",
        "typeface",
        "784-16-10",
        0.875,
        2,
        True,
    )
    [listed] = ws.models()
    assert listed == e
    ckpt = ws.load_model(e.id)
    x = torch.rand(3, 784)
    assert torch.equal(ckpt.model(x), model(x)) and ckpt.initial_model is not None
    assert ws.history(e.id)["loss"] == [2.0, 1.0]
    snaps = ws.snapshots(e.id)
    assert list(snaps) == [0, 2] and snaps[2].shape == (16, 784) and snaps[2].dtype == np.float32
    # a reload (a new object for the same id) sees the same
    again, is_new = open_workspace(ws.id, root)
    assert not is_new and [m.id for m in again.models()] == [e.id]
    ws.delete_model(e.id)
    assert ws.models() == [] and again.models() == []
    with pytest.raises(XWPError, match="no longer"):
        ws.load_model(e.id)


def test_workspaces_are_isolated(root):
    a, _ = open_workspace(None, root)
    b, _ = open_workspace(None, root)
    ea = a.save_model(small_model(), meta(), "A's model")
    a.save_comparison("A's comparison", {"table": pd.DataFrame({"x": [1.0]})})
    assert b.models() == [] and b.comparisons() == []
    with pytest.raises(XWPError):
        b.load_model(ea.id)  # the id of another workspace's model means nothing here
    for bad in ["../" + a.id, ea.id + "/..", "../../etc/passwd"]:
        with pytest.raises(XWPError):
            b.load_model(bad)
        with pytest.raises(XWPError):
            b.delete_model(bad)
    assert len(a.models()) == 1


def test_comparison_roundtrip_without_pickle(root):
    ws, _ = open_workspace(None, root)
    table = pd.DataFrame({"ad_mean": [0.1, 0.2], "n": [5, 5]}, index=pd.Index(["xwp", "random"], name="method"))
    curves = {"deletion_xwp": np.linspace(1, 0, 201, dtype=np.float32)[None].repeat(5, 0)}
    c = ws.save_comparison("run 1", {"table": table}, curves, {"model": "m1", "n": 5, "bad": float("nan")})
    [listed] = ws.comparisons()
    assert listed.id == c.id and listed.model == "m1"
    back = ws.load_comparison(c.id)
    pd.testing.assert_frame_equal(back.tables["table"], table)
    np.testing.assert_array_equal(back.arrays["deletion_xwp"], curves["deletion_xwp"])
    assert back.info == {"model": "m1", "n": 5, "bad": None}
    assert not any(p.suffix in (".pkl", ".pt", ".pickle") for p in ws.path.rglob("*"))
    ws.delete_comparison(c.id)
    assert ws.comparisons() == []
    with pytest.raises(XWPError):
        ws.save_comparison("x", {"../evil": table})


def test_size_and_count_limits_refuse_new_saves(root):
    one = len(__import__("xwp.checkpoint", fromlist=["x"]).checkpoint_bytes(small_model(), meta()))
    ws, _ = open_workspace(None, root, WorkspaceLimits(max_bytes=int(2.5 * one), max_items=20))
    ws.save_model(small_model(), meta(), "m1")
    ws.save_model(small_model(), meta(), "m2")
    with pytest.raises(WorkspaceFull, match="delete a model"):
        ws.save_model(small_model(), meta(), "m3")
    assert [m.name for m in ws.models()] == ["m1", "m2"]  # nothing evicted, nothing half-written
    assert len(list((ws.path / "models").iterdir())) == 4
    ws2, _ = open_workspace(None, root, WorkspaceLimits(max_items=2))
    ws2.save_model(small_model(), meta(), "a")
    ws2.save_model(small_model(), meta(), "b")
    with pytest.raises(WorkspaceFull, match="limit is 2"):
        ws2.save_model(small_model(), meta(), "c")


def test_expiry_removes_only_old_workspaces(root):
    old, _ = open_workspace(None, root)
    old.save_model(small_model(), meta(), "old")
    fresh, _ = open_workspace(None, root)
    fresh.save_model(small_model(), meta(), "fresh")
    stranger = root / "not-a-workspace"
    stranger.mkdir()
    past = time.time() - 8 * 86400
    os.utime(old.path / "stamp", (past, past))
    os.utime(stranger, (past, past))
    assert cleanup_expired(root, days=7) == [old.id]
    assert not old.path.exists() and fresh.path.exists() and stranger.exists()
    # an expired id from an old link opens an empty workspace with the same id
    ws, is_new = open_workspace(old.id, root)
    assert ws.id == old.id and is_new and ws.models() == []


def test_workspace_count_is_bounded(root):
    lim = WorkspaceLimits(max_workspaces=2)
    for _ in range(2):
        ws, _ = open_workspace(None, root, lim)
        ws.touch(force=True)
    with pytest.raises(XWPError, match="workspaces"):
        open_workspace(None, root, lim)


def test_two_tabs_saving_at_once_lose_nothing(root):
    ws_id = new_id()
    errors = []

    def tab(k: int) -> None:
        try:
            ws = Workspace(ws_id, root)  # each tab has its own object, as after a reload
            for j in range(3):
                ws.save_model(small_model(k), meta(), f"tab{k}-{j}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=tab, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = sorted(m.name for m in Workspace(ws_id, root).models())
    assert names == sorted(f"tab{k}-{j}" for k in range(4) for j in range(3))
    assert not [p for p in (root / ws_id).rglob("*.tmp")]


def test_count_limit_holds_under_concurrent_saves(root):
    ws_id = new_id()
    lim = WorkspaceLimits(max_items=5)
    full = []

    def tab() -> None:
        for _ in range(4):
            try:
                Workspace(ws_id, root, lim).save_model(small_model(), meta(), "m")
            except WorkspaceFull:
                full.append(1)

    threads = [threading.Thread(target=tab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(Workspace(ws_id, root).models()) == 5 and len(full) == 7


def test_hostile_files_on_disk_are_refused_or_skipped(root, tmp_path):
    ws, _ = open_workspace(None, root)
    e = ws.save_model(small_model(), meta(), "good")
    d = ws.path / "models"
    # a damaged entry, a huge entry, a non-object entry, a link and a FIFO: skipped in listings
    (d / "0000000000000001.json").write_text("{not json")
    (d / "0000000000000002.json").write_bytes(b"[" * 100_000)
    (d / "0000000000000003.json").write_bytes(b" " * 600_000 + b"{}")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    os.symlink(secret, d / "0000000000000004.json")
    os.mkfifo(d / "0000000000000005.json")
    assert [m.id for m in ws.models()] == [e.id]
    # a checkpoint replaced by a link to a server file is not followed
    os.replace(d / f"{e.id}.safetensors", tmp_path / "moved")
    os.symlink(secret, d / f"{e.id}.safetensors")
    with pytest.raises(XWPError) as err:
        ws.load_model(e.id)
    assert "SECRET" not in str(err.value)
    # a pickle planted as a checkpoint is refused by load_checkpoint
    (d / f"{e.id}.safetensors").unlink()
    torch.save({"x": 1}, d / f"{e.id}.safetensors")
    with pytest.raises(XWPError, match="pickle"):
        ws.load_model(e.id)
    # the workspace folder itself replaced by a link: nothing is written through it
    target = tmp_path / "elsewhere"
    target.mkdir()
    ws2 = Workspace(new_id(), root)
    os.symlink(target, ws2.path)
    with pytest.raises(XWPError):
        ws2.save_model(small_model(), meta(), "x")
    assert list(target.iterdir()) == []


def test_names_and_metadata_are_sanitised(root):
    ws, _ = open_workspace(None, root)
    e = ws.save_model(small_model(), {"dataset": "typeface\x00\n", "test_accuracy": float("nan")}, "a\nb" + "x" * 500)
    assert "\n" not in e.name and len(e.name) <= 120 and e.accuracy is None and e.dataset == "typeface"


def test_orphans_of_a_killed_save_are_removed(root):
    ws, _ = open_workspace(None, root)
    ws.save_model(small_model(), meta(), "kept")
    d = ws.path / "models"
    orphan = d / "00000000000000ff.safetensors"
    orphan.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(orphan, (past, past))
    assert ws.remove_orphans() == 1 and not orphan.exists() and len(ws.models()) == 1


def test_total_size_over_all_workspaces_is_bounded(root):
    from xwp.checkpoint import checkpoint_bytes

    one = len(checkpoint_bytes(small_model(), meta()))
    lim = WorkspaceLimits(max_total_bytes=int(2.5 * one))
    a, _ = open_workspace(None, root, lim)
    b, _ = open_workspace(None, root, lim)
    a.save_model(small_model(), meta(), "a1")
    b.save_model(small_model(), meta(), "b1")
    with pytest.raises(WorkspaceFull, match="server's workspaces are full"):
        open_workspace(None, root, lim)[0].save_model(small_model(), meta(), "c1")
    assert len(a.models()) == len(b.models()) == 1


def test_recorded_snapshots_roundtrip_into_the_replay(root):
    from xwp import train
    from xwp.data.datasets import ImageSet
    from xwp.viz.replay import SnapshotRecorder, replay_png

    model = small_model()
    data = ImageSet(torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,)), [str(i) for i in range(10)], "t", "train")
    rec = SnapshotRecorder(model)
    history = train(model, data, epochs=2, batch_size=16, device="cpu", progress=rec)
    ws, _ = open_workspace(None, root)
    e = ws.save_model(model, {"dataset": "t", "history": history.as_dict()}, "replayed", snapshots=rec.snapshots)
    snaps = Workspace(ws.id, root).snapshots(e.id)
    assert list(snaps) == [0, 1, 2] and e.epochs == 2
    np.testing.assert_allclose(snaps[2], rec.snapshots[2], atol=1e-3)
    png, epoch = replay_png(snaps, 2, unit=0)
    assert epoch == 2 and png[:4] == b"\x89PNG"


def test_a_cnns_kernel_snapshots_roundtrip(root):
    """A CNN's first layer is 4-D (C1, C, k, k); its snapshots keep that shape (once refused as not 2-D)."""
    from xwp.models import CNN
    from xwp.serve.storage import snapshot_bytes

    model = CNN(channels=(4, 8), kernel=3, hidden=(16,), seed=0)
    w = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach().numpy()
    ws, _ = open_workspace(None, root)
    e = ws.save_model(model, meta(), "cnn", snapshots={0: w, 1: w + 0.5})
    snaps = Workspace(ws.id, root).snapshots(e.id)
    assert sorted(snaps) == [0, 1] and snaps[1].shape == (4, 1, 3, 3)
    np.testing.assert_allclose(snaps[1], w + 0.5, atol=1e-3)
    for bad in (w[0, 0, 0], w[..., 0], np.full_like(w, np.nan)):  # 1-D, 3-D, not finite
        with pytest.raises(XWPError, match="first-layer weight array"):
            snapshot_bytes({0: bad})


def test_an_evaluation_roundtrips_through_a_workspace(root):
    from xwp.data.datasets import load_dataset
    from xwp.evaluation.protocol import evaluate
    from xwp.serve.storage import evaluation_from, evaluation_parts

    model = small_model()
    data = load_dataset("digits", "test")
    ev = evaluate(model, data, ["xwp", "random"], n=6, seed=0, n_examples=3)
    tables, arrays, info = evaluation_parts(ev, predictions=np.arange(3), model="m1", seconds=1.5)
    ws, _ = open_workspace(None, root)
    c = ws.save_comparison("xwp vs random", tables, arrays, info)
    assert ws.comparisons()[0].model == "m1"
    back, predictions = evaluation_from(Workspace(ws.id, root).load_comparison(c.id))
    pd.testing.assert_frame_equal(back.table, ev.table, check_dtype=False)
    pd.testing.assert_frame_equal(back.per_image, ev.per_image, check_dtype=False)
    pd.testing.assert_frame_equal(back.table_correct(), ev.table_correct(), check_dtype=False)
    assert list(back.curves) == list(ev.curves)
    for key, named in ev.curves.items():
        for name, curve in named.items():
            np.testing.assert_array_equal(back.curves[key][name], curve)
    for m in ("xwp", "random"):
        np.testing.assert_array_equal(back.examples["attributions"][m], ev.examples["attributions"][m])
    assert back.settings["n"] == 6 and back.examples["classes"] == ev.examples["classes"]
    np.testing.assert_array_equal(predictions, np.arange(3))

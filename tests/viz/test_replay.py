"""Training replay: bounded first-layer snapshots through xwp.train's callback, and the unit figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xwp import MLP, train
from xwp.data.datasets import ImageSet
from xwp.errors import XWPError
from xwp.viz.replay import SnapshotRecorder, nearest_epoch, planned_epochs, replay_png, unit_png


def tiny_set(n: int = 64, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    return ImageSet(images, labels, ["a", "b", "c"], "tiny", "train")


def test_planned_epochs_are_bounded_and_even():
    assert planned_epochs(5) == [0, 1, 2, 3, 4, 5]
    p = planned_epochs(100, 20)
    assert len(p) == 20 and p[0] == 0 and p[-1] == 100
    gaps = np.diff(p)
    assert gaps.max() - gaps.min() <= 1
    with pytest.raises(XWPError):
        planned_epochs(3, 1)


def test_recorder_keeps_initial_and_each_epoch_through_train():
    model = MLP((784, 8, 3), seed=0)
    w0 = model.linears[0].weight.detach().clone()
    rec = SnapshotRecorder(model)
    train(model, tiny_set(), epochs=3, batch_size=16, device="cpu", progress=rec, report_every=1)
    snaps = rec.snapshots
    assert list(snaps) == [0, 1, 2, 3]
    np.testing.assert_allclose(snaps[0], w0.numpy(), atol=1e-3)  # float16 storage
    np.testing.assert_allclose(snaps[3], model.linears[0].weight.detach().numpy(), atol=1e-3)
    assert not np.allclose(snaps[1], snaps[0])
    # the snapshot of epoch 0 equals the model's own initial state
    np.testing.assert_allclose(snaps[0], model.initial_state()["0.weight"].numpy(), atol=1e-3)


def test_recorder_is_bounded_and_thins_evenly():
    model = MLP((784, 4, 3), seed=0)
    rec = SnapshotRecorder(model, max_snapshots=5)
    train(model, tiny_set(32), epochs=12, batch_size=32, device="cpu", progress=rec)
    assert list(rec.snapshots) == planned_epochs(12, 5) == [0, 3, 6, 9, 12]
    assert rec.nbytes == 5 * 4 * 784 * 2


def test_stop_is_passed_on_and_the_last_epoch_kept():
    model = MLP((784, 4, 3), seed=0)

    def stop_after_7(p):
        return not (p.epoch_done and p.epoch == 7)

    rec = SnapshotRecorder(model, max_snapshots=5, then=stop_after_7)
    history = train(model, tiny_set(32), epochs=40, batch_size=32, device="cpu", progress=rec)
    assert history.epochs == 7
    kept = list(rec.snapshots)
    assert kept[0] == 0 and kept[-1] == 7 and len(kept) <= 5  # 0, 10, ... planned; 7 kept as the latest
    np.testing.assert_allclose(rec.snapshots[7], model.linears[0].weight.detach().numpy(), atol=1e-3)


def test_memory_never_exceeds_the_bound_during_training():
    model = MLP((784, 4, 3), seed=0)
    seen = []
    rec = SnapshotRecorder(model, max_snapshots=4, then=lambda p: seen.append(len(rec._store)))
    train(model, tiny_set(32), epochs=15, batch_size=32, device="cpu", progress=rec)
    assert max(seen) <= 4 and list(rec.snapshots) == planned_epochs(15, 4)


def test_unit_and_replay_pngs():
    rng = np.random.default_rng(0)
    w0, w1 = rng.normal(size=784), rng.normal(size=784)
    png = unit_png(w0, w1, unit=3)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    snaps = {0: rng.normal(size=(5, 784)), 4: rng.normal(size=(5, 784)), 8: rng.normal(size=(5, 784))}
    assert nearest_epoch(snaps, 5) == 4 and nearest_epoch(snaps, 100) == 8
    png, e = replay_png(snaps, 7, unit=2)
    assert e == 8 and png[:4] == b"\x89PNG"
    with pytest.raises(XWPError):
        replay_png(snaps, 1, unit=5)
    with pytest.raises(XWPError):
        nearest_epoch({}, 1)
    with pytest.raises(XWPError):
        unit_png(np.zeros(10), np.zeros(10), 0)

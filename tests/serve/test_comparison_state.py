"""The Compare page's comparison as a dataclass (xwp.serve.comparison.Comparison): its lock, status, caches."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import pytest

from xwp.serve import comparison
from xwp.serve.comparison import Comparison, Status


def new(methods=("a", "b", "random")) -> Comparison:
    return Comparison(uid="u1", model="m", dataset="d", n=3, seed=0, methods=list(methods), pending=list(methods))


def test_a_reader_always_sees_parts_and_pending_add_up_while_the_worker_adds_parts():
    methods = [f"m{i}" for i in range(3000)]
    c = new(methods)
    bad, reads = [], [0]
    done = threading.Event()

    def worker():
        for i, name in enumerate(methods):
            c.add_part(SimpleNamespace(methods=[name]), 0.001, name, predictions=[i] if i == 0 else [-1])
        done.set()

    def reader():
        while not done.is_set() or reads[0] == 0:
            now = c.snapshot()
            reads[0] += 1
            if len(now.parts) + len(now.pending) != len(now.methods):
                bad.append((len(now.parts), len(now.pending)))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a torn update would show
    try:
        threads = [threading.Thread(target=worker), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not bad, bad[:5]
    assert reads[0] > 0
    assert len(c.parts) == len(methods) and c.pending == []
    assert [p.methods[0] for p in c.parts] == methods  # in the order they finished
    assert c.seconds == pytest.approx(0.001 * len(methods))
    assert c.predictions == [0]  # the first method's predictions are kept


def test_add_part_makes_new_lists():
    c = new()
    parts, pending = c.parts, c.pending
    c.add_part("ev-a", 1.5, "a")
    assert parts == [] and pending == ["a", "b", "random"]  # what a reader already held is unchanged
    assert c.parts == ["ev-a"] and c.pending == ["b", "random"] and c.seconds == 1.5


def test_stop_resume_finish():
    c = new()
    assert c.status is Status.RUNNING and c.running and not c.resumable
    assert c.resume() is False  # only a stopped comparison resumes
    assert c.stop() is True
    assert c.status is Status.STOPPED and c.resumable and not c.running
    assert c.stop() is False  # already stopped
    assert c.stop("boom") is False and c.error == "boom"  # the job's failure is kept
    assert c.resume() is True
    assert c.status is Status.RUNNING and c.error is None
    c.finish()
    assert c.status is Status.DONE and not c.resumable
    assert c.stop() is False and c.status is Status.DONE  # a done comparison stays done
    assert c.resume() is False and c.status is Status.DONE


def test_a_stopped_comparison_without_pending_methods_does_not_resume():
    c = new(["a"])
    c.add_part("ev", 0.1, "a")
    c.stop()
    assert not c.resumable and c.resume() is False and c.status is Status.STOPPED


def test_status_accepts_its_values_and_refuses_any_other_string():
    assert Comparison(status="stopped").status is Status.STOPPED
    c = new()
    c.status = "done"
    assert c.status is Status.DONE and c.status == "done" and str(c.status) == "done"
    with pytest.raises(ValueError, match="unknown comparison status 'finished'"):
        c.status = "finished"
    assert c.status is Status.DONE
    with pytest.raises(ValueError, match="unknown comparison status"):
        Comparison(status="paused")


def test_every_comparison_has_its_own_lock_and_fresh_lists():
    a, b = Comparison(), Comparison()
    assert a.lock is not b.lock and a.parts is not b.parts and a.pending is not b.pending
    assert "lock" not in repr(a)
    with a.lock:  # one plain lock: a second acquire from the same thread would wait
        assert not a.lock.acquire(blocking=False)


def test_combined_evaluation_is_cached_until_a_part_is_added(monkeypatch):
    calls = []

    def fake_combine(parts):
        calls.append(list(parts))
        return SimpleNamespace(parts=list(parts))

    monkeypatch.setattr(comparison, "combine", fake_combine)
    c = new()
    assert c.combined_evaluation() is None and calls == []
    c.add_part("ev-a", 0.1, "a")
    first = c.combined_evaluation()
    assert first.parts == ["ev-a"] and c.combined_evaluation() is first and len(calls) == 1
    c.add_part("ev-b", 0.1, "b")
    second = c.combined_evaluation()
    assert second.parts == ["ev-a", "ev-b"] and c.combined_of == 2 and len(calls) == 2
    c.combined = None  # a cleared cache is combined again
    assert c.combined_evaluation().parts == ["ev-a", "ev-b"] and len(calls) == 3


def test_figures_are_drawn_once_per_view(monkeypatch):
    drawn = []
    monkeypatch.setattr(comparison, "combine", lambda parts: SimpleNamespace(parts=list(parts)))

    def fake_figures(ev, label, predictions, *view):
        drawn.append(view)
        return {"deletion": b"d", "insertion": b"i", "grid": b"g"}

    monkeypatch.setattr(comparison, "comparison_figures", fake_figures)
    c = new()
    c.add_part("ev-a", 0.1, "a")
    view = ("softmax", "zero", False, 1.0, False)
    figures = c.figures_for(view)
    assert c.figures_for(view) is figures and drawn == [view]
    c.figures_for(("softmax", "zero", False, 0.05, True))
    assert len(drawn) == 2 and c.figures_view[3:] == (0.05, True)
    c.add_part("ev-b", 0.1, "b")  # a new method: a new evaluation, figures drawn again for it
    c.figures_for(("softmax", "zero", False, 0.05, True))
    assert len(drawn) == 3


def test_to_save_and_a_saved_comparison(monkeypatch):
    monkeypatch.setattr(comparison, "combine", lambda parts: SimpleNamespace(parts=list(parts)))
    c = new()
    assert c.to_save()[0] is None  # nothing finished yet
    c.add_part("ev-a", 2.0, "a", predictions="p")
    ev, predictions, info = c.to_save()
    assert ev.parts == ["ev-a"] and predictions == "p"
    assert info == {"model": "m", "dataset": "d", "seconds": 2.0, "uid": "u1"}
    c.mark_saved("c1")
    c.note_save_problem("full")
    assert c.saved_id == "c1" and c.save_problem == "full"

    settings = {"n": 5, "seed": 7}
    loaded = SimpleNamespace(settings=settings, outputs=["softmax"], removals=["mean"], methods=["a", "random"])
    s = Comparison.saved(loaded, "preds", {"model": "m2", "seconds": "nonsense"}, "c2")
    assert s.status is Status.DONE and s.parts == [loaded] and s.evaluation is loaded and s.pending == []
    assert (s.uid, s.model, s.dataset, s.seconds, s.n, s.seed) == ("", "m2", "?", 0.0, 5, 7)
    assert s.removal == "mean" and s.saved_id == "c2" and s.predictions == "preds"
    assert s.to_save()[0] is loaded  # a loaded comparison saves its evaluation as it is

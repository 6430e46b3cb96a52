"""The compute executor: priorities, batching, long jobs, Stop, bounds, errors, threads."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.support import random_trained_mlp
from xwp.attribution import XWP, RandomAttribution, XWPc
from xwp.errors import XWPError
from xwp.serve.compute import (
    BACKGROUND,
    INTERACTIVE,
    NORMAL,
    ComputeExecutor,
    JobCancelled,
    batch_key,
    get_executor,
    is_batchable,
)

WAIT = 10  # seconds: generous bounds on waits that take milliseconds


@pytest.fixture
def ex():
    executor = ComputeExecutor(workers=1, threads=1, max_pending=1000)
    yield executor
    executor.shutdown()


def block(executor):
    """Occupy the worker until the returned event is set (so that later requests queue up)."""
    started, release = threading.Event(), threading.Event()
    executor.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)
    return release


def test_priorities_then_fifo(ex):
    order = []
    release = block(ex)
    futures = [
        ex.submit(order.append, "background", priority=BACKGROUND),
        ex.submit(order.append, "normal-1", priority=NORMAL),
        ex.submit(order.append, "interactive-1", priority=INTERACTIVE),
        ex.submit(order.append, "normal-2", priority=NORMAL),
        ex.submit(order.append, "interactive-2", priority=INTERACTIVE),
    ]
    release.set()
    for f in futures:
        f.result(WAIT)
    assert order == ["interactive-1", "interactive-2", "normal-1", "normal-2", "background"]


def test_batching_merges_waiting_requests_into_one_call(ex):
    calls = []

    def double(items):
        calls.append(list(items))
        return [2 * i for i in items]

    release = block(ex)
    same = [ex.submit_batch("k", double, i) for i in range(10)]
    other = ex.submit_batch("other", double, 100)
    release.set()
    assert [f.result(WAIT) for f in same] == [2 * i for i in range(10)]
    assert other.result(WAIT) == 200
    assert calls == [list(range(10)), [100]]  # one call per key, items in submission order


def test_batches_respect_max_batch_and_priority():
    ex = ComputeExecutor(threads=1, max_batch=4)
    try:
        calls = []

        def ident(items):
            calls.append(len(items))
            return items

        release = block(ex)
        futures = [ex.submit_batch("k", ident, i) for i in range(10)]
        urgent = ex.submit_batch("k", ident, "urgent", priority=INTERACTIVE - 1)
        release.set()
        assert [f.result(WAIT) for f in futures] == list(range(10))
        assert urgent.result(WAIT) == "urgent"
        assert calls == [1, 4, 4, 2]  # the higher-priority request is its own batch and goes first
    finally:
        ex.shutdown()


def test_a_request_after_a_batch_started_opens_a_new_batch(ex):
    calls, inside, release = [], threading.Event(), threading.Event()

    def slow(items):
        calls.append(list(items))
        inside.set()
        release.wait(WAIT)
        return items

    first = ex.submit_batch("k", slow, 1)
    assert inside.wait(WAIT)
    second = ex.submit_batch("k", slow, 2)
    release.set()
    assert (first.result(WAIT), second.result(WAIT)) == (1, 2)
    assert calls == [[1], [2]]


@pytest.mark.parametrize("cls", [XWP, XWPc])
@pytest.mark.parametrize("given", [True, False])
def test_batched_attribution_equals_unbatched_calls(ex, cls, given):
    model = random_trained_mlp((784, 64, 32, 10), seed=3)  # float64
    method = cls(model)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(1, 1, 28, 28, generator=gen, dtype=torch.float64) for _ in range(12)]
    for x in xs:
        x[x < 0.6] = 0
    targets = [i % 10 if given else None for i in range(12)]
    release = block(ex)
    calls = ex.stats["calls"]
    futures = [ex.attribute(method, x, t) for x, t in zip(xs, targets, strict=True)]
    release.set()
    got = [f.result(WAIT) for f in futures]
    assert ex.stats["calls"] - calls == 1  # ONE merged call for the 12 requests
    for x, t, a in zip(xs, targets, got, strict=True):
        ref = method.attribute(x, target=t)
        assert a.shape == ref.shape == x.shape
        # not bit-identical: BLAS takes another kernel for 12 rows than for 1 (measured: ~1e-13)
        torch.testing.assert_close(a, ref, rtol=1e-12, atol=1e-12)


def test_requests_with_other_targets_mode_or_shape_do_not_merge(ex):
    model = random_trained_mlp((16, 6, 3), seed=1)
    method = XWP(model)
    release = block(ex)
    calls = ex.stats["calls"]
    a = ex.attribute(method, torch.rand(1, 16, dtype=torch.float64), None)
    b = ex.attribute(method, torch.rand(1, 16, dtype=torch.float64), 1)
    c = ex.attribute(method, torch.rand(2, 4, 4, dtype=torch.float64), 1)
    release.set()
    for f in (a, b, c):
        f.result(WAIT)
    assert ex.stats["calls"] - calls == 3


class BatchSeeded:
    """A stochastic method whose draws depend on the batch (one generator per call)."""

    def attribute(self, inputs, target=None):
        """Uniform draws from one generator seeded 0 per call."""
        return torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0))


def test_stochastic_methods_are_not_batched(ex):
    method = BatchSeeded()
    assert not is_batchable(method)
    assert is_batchable(RandomAttribution(random_trained_mlp((16, 6, 3))))  # one generator per image
    assert is_batchable(XWP(random_trained_mlp((16, 6, 3))))
    release = block(ex)
    calls = ex.stats["calls"]
    xs = [torch.rand(1, 16) for _ in range(3)]
    futures = [ex.attribute(method, x) for x in xs]
    release.set()
    for x, f in zip(xs, futures, strict=True):
        assert torch.equal(f.result(WAIT), method.attribute(x))  # same draws as a direct call
    assert ex.stats["calls"] - calls == 3


def test_per_image_flag_overrides_the_default():
    class Flagged:
        per_image_deterministic = True

    class Unflagged(XWP):
        per_image_deterministic = False

    assert is_batchable(Flagged())
    assert not is_batchable(Unflagged(random_trained_mlp((16, 6, 3))))


def test_predict_merges_and_matches_the_model(ex):
    model = random_trained_mlp((16, 6, 3), seed=2)
    xs = [torch.rand(n, 16, dtype=torch.float64) for n in (1, 3, 2)]
    release = block(ex)
    futures = [ex.predict(model, x) for x in xs]
    release.set()
    for x, f in zip(xs, futures, strict=True):
        with torch.no_grad():
            torch.testing.assert_close(f.result(WAIT), torch.softmax(model(x), 1), rtol=1e-12, atol=1e-12)


def test_batch_key_separates_models_methods_options_and_target_modes():
    k = batch_key("m1", "xwp", {"output": "softmax"}, 3)
    assert k == batch_key("m1", "xwp", {"output": "softmax"}, 5)  # explicit targets concatenate
    assert k != batch_key("m2", "xwp", {"output": "softmax"}, 3)
    assert k != batch_key("m1", "xwpc", {"output": "softmax"}, 3)
    assert k != batch_key("m1", "xwp", {"output": "logits"}, 3)
    assert k != batch_key("m1", "xwp", {"output": "softmax"}, None)


def chunks(n, log, started=None, gate=None):
    """A long job of ``n`` chunks that logs each one and yields its progress."""
    try:
        for i in range(n):
            log.append(f"chunk {i}")
            if started is not None and i == 0:
                started.set()
                gate.wait(WAIT)
            yield (i + 1) / n, f"chunk {i + 1}/{n}"
        return "finished"
    finally:
        log.append("closed")


def test_long_job_reports_progress_and_returns(ex):
    log, seen = [], []
    job = ex.submit_job(chunks(4, log), progress=seen.append)
    assert job.result(WAIT) == "finished"
    assert [s[0] for s in seen] == [0.25, 0.5, 0.75, 1.0]
    assert job.progress == (1.0, "chunk 4/4")
    assert log[-1] == "closed"


def test_interactive_requests_run_between_chunks_of_a_long_job(ex):
    log, started, gate = [], threading.Event(), threading.Event()
    job = ex.submit_job(chunks(3, log, started, gate))
    assert started.wait(WAIT)
    f = ex.submit(log.append, "stroke", priority=INTERACTIVE)
    gate.set()
    f.result(WAIT)
    job.result(WAIT)
    assert log == ["chunk 0", "stroke", "chunk 1", "chunk 2", "closed"]


def test_stop_ends_a_long_job_at_the_next_chunk_boundary(ex):
    log, started, gate = [], threading.Event(), threading.Event()
    job = ex.submit_job(chunks(100, log, started, gate))
    assert started.wait(WAIT)
    job.cancel()
    gate.set()
    with pytest.raises(JobCancelled):
        job.result(WAIT)
    assert log == ["chunk 0", "closed"]  # the generator was closed (its finally ran), nothing more
    assert ex.submit(lambda: "alive").result(WAIT) == "alive"


def test_a_job_cancelled_while_queued_never_starts(ex):
    log = []
    release = block(ex)
    job = ex.submit_job(chunks(3, log))
    job.cancel()
    release.set()
    with pytest.raises(JobCancelled):
        job.result(WAIT)
    assert log == []


def test_task_ticks_run_waiting_requests_and_stop(ex):
    log, first_tick, gate = [], threading.Event(), threading.Event()

    def task(ctx):
        for i in range(50):
            log.append(f"step {i}")
            ctx.tick((i + 1) / 50)
            if i == 0:
                first_tick.set()
                gate.wait(WAIT)
        return "done"

    job = ex.submit_task(task, priority=BACKGROUND)
    assert first_tick.wait(WAIT)
    f = ex.submit(log.append, "stroke", priority=INTERACTIVE)
    job.cancel()
    gate.set()
    with pytest.raises(JobCancelled):
        job.result(WAIT)
    assert f.result(WAIT) is None
    assert log == ["step 0", "step 1", "stroke"]  # the tick after step 1 saw Stop; then the stroke ran
    assert job.progress == 1 / 50


def test_task_ticks_interleave_requests(ex):
    log, first_tick, gate = [], threading.Event(), threading.Event()

    def task(ctx):
        for i in range(3):
            log.append(f"step {i}")
            ctx.tick()
            if i == 0:
                first_tick.set()
                gate.wait(WAIT)
        return "done"

    job = ex.submit_task(task)
    assert first_tick.wait(WAIT)
    f = ex.submit(log.append, "stroke")
    gate.set()
    assert job.result(WAIT) == "done"
    f.result(WAIT)
    assert log == ["step 0", "step 1", "stroke", "step 2"]


def test_queue_bound_refuses_with_a_clear_message():
    ex = ComputeExecutor(threads=1, max_pending=3)
    try:
        release = block(ex)
        futures = [ex.submit(lambda: 1), ex.submit_batch("k", lambda items: items, 2), ex.submit_job(iter([]))]
        with pytest.raises(XWPError, match="busy.*3 computations are waiting"):
            ex.submit(lambda: 4)
        with pytest.raises(XWPError, match="busy"):
            ex.submit_batch("k", lambda items: items, 5)
        release.set()
        assert futures[0].result(WAIT) == 1
        assert futures[1].result(WAIT) == 2
        futures[2].result(WAIT)
        assert ex.pending() == 0
        assert ex.submit(lambda: 6).result(WAIT) == 6  # room again
    finally:
        ex.shutdown()


def test_an_error_fails_only_its_own_future(ex):
    def fragile(items):
        if "bad" in items:
            raise ValueError("bad item")
        return [i.upper() for i in items]

    release = block(ex)
    futures = [ex.submit_batch("k", fragile, s) for s in ("a", "bad", "c")]
    plain = ex.submit(lambda: 1 / 0)
    release.set()
    assert futures[0].result(WAIT) == "A"
    assert futures[2].result(WAIT) == "C"
    with pytest.raises(ValueError, match="bad item"):
        futures[1].result(WAIT)
    with pytest.raises(ZeroDivisionError):
        plain.result(WAIT)
    assert ex.submit(lambda: "still serving").result(WAIT) == "still serving"


def test_a_bad_target_in_a_merged_explanation_fails_only_that_request(ex):
    method = XWP(random_trained_mlp((16, 6, 3), seed=5))
    release = block(ex)
    xs = [torch.rand(1, 16, dtype=torch.float64) for _ in range(3)]
    futures = [ex.attribute(method, x, t) for x, t in zip(xs, (0, 7, 2), strict=True)]
    release.set()
    with pytest.raises(XWPError, match="out of range"):
        futures[1].result(WAIT)
    for i in (0, 2):
        torch.testing.assert_close(futures[i].result(WAIT), method.attribute(xs[i], target=(0, 7, 2)[i]))


def test_a_failing_job_and_progress_callback_leave_the_executor_serving(ex):
    def broken():
        yield 0.5
        raise RuntimeError("job failed")

    job = ex.submit_job(broken())
    with pytest.raises(RuntimeError, match="job failed"):
        job.result(WAIT)
    job = ex.submit_job(chunks(3, []), progress=lambda p: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        job.result(WAIT)
    assert ex.submit(lambda: 1).result(WAIT) == 1


def test_cancelled_futures_are_skipped(ex):
    ran = []
    release = block(ex)
    f = ex.submit(ran.append, "call")
    g = ex.submit_batch("k", lambda items: ran.extend(items) or items, "batched")
    h = ex.submit_batch("k", lambda items: ran.extend(items) or items, "kept")
    assert f.cancel() and g.cancel()
    release.set()
    assert h.result(WAIT) == "kept"
    assert ran == ["kept"]


def test_many_submitting_threads(ex):
    errors, n_threads, per_thread = [], 16, 40

    def client(k):
        try:
            for i in range(per_thread):
                if i % 3 == 0:
                    f = ex.submit(lambda a=k, b=i: a * 1000 + b, priority=i % 3)
                else:
                    f = ex.submit_batch(("k", i % 2), lambda items: [a * 1000 + b for a, b in items], (k, i))
                assert f.result(WAIT) == k * 1000 + i
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert errors == []
    assert ex.pending() == 0


def test_worker_owns_its_thread_count():
    ex = ComputeExecutor(threads=1)
    try:
        assert ex.submit(torch.get_num_threads).result(WAIT) == 1
    finally:
        ex.shutdown()


def test_shutdown_fails_waiting_requests_and_refuses_new_ones():
    ex = ComputeExecutor(threads=1)
    release = block(ex)
    waiting = ex.submit(lambda: 1)
    job = ex.submit_job(chunks(3, []))
    threading.Timer(0.05, release.set).start()
    ex.shutdown()
    for f in (waiting, job.future):
        with pytest.raises(XWPError, match="shut down"):
            f.result(WAIT)
    with pytest.raises(XWPError, match="shut down"):
        ex.submit(lambda: 2)


def test_the_process_executor_is_one_object():
    assert get_executor() is get_executor()


def test_a_running_task_stops_at_its_next_tick_on_shutdown():
    ex = ComputeExecutor(threads=1)
    first_tick, gate = threading.Event(), threading.Event()

    def task(ctx):
        for _ in range(100):
            ctx.tick()
            first_tick.set()
            gate.wait(WAIT)

    job = ex.submit_task(task)
    assert first_tick.wait(WAIT)
    threading.Timer(0.05, gate.set).start()
    ex.shutdown()
    with pytest.raises(XWPError, match="shut down"):
        job.result(WAIT)


@pytest.mark.parametrize("lane", [True, False])
def test_the_lane_serves_strokes_while_a_chunk_runs(lane):
    """With the lane a stroke is answered while a job's chunk holds the worker; without it, it waits."""
    ex = ComputeExecutor(threads=1, lane=lane)
    started, gate, log = threading.Event(), threading.Event(), []
    try:
        job = ex.submit_job(chunks(2, log, started, gate), priority=BACKGROUND)
        assert started.wait(WAIT)  # the first chunk holds the main worker until the gate opens
        stroke = ex.submit(lambda: "maps", priority=INTERACTIVE)
        later = ex.submit(lambda: "normal", priority=NORMAL)  # the lane never takes other priorities
        if lane:
            assert stroke.result(WAIT) == "maps" and not gate.is_set()
            assert not later.done()
        else:
            assert not stroke.done() and not stroke.running()
        gate.set()
        assert stroke.result(WAIT) == "maps" and later.result(WAIT) == "normal" and job.result(WAIT) == "finished"
    finally:
        gate.set()
        ex.shutdown()


def test_the_lane_never_takes_a_job():
    ex = ComputeExecutor(threads=1, lane=True)
    started, release = threading.Event(), threading.Event()
    ex.submit(lambda: (started.set(), release.wait(WAIT)), priority=BACKGROUND)
    assert started.wait(WAIT)  # the main worker is busy: only the lane is free
    ran = threading.Event()

    def one_chunk():
        ran.set()
        yield

    try:
        job = ex.submit_job(one_chunk(), priority=INTERACTIVE)  # a job, even at this priority
        assert not ran.wait(0.5)  # the free lane left it alone
        release.set()
        job.result(WAIT)
        assert ran.is_set()
    finally:
        release.set()
        ex.shutdown()


def test_the_process_executor_has_the_lane_by_default(monkeypatch):
    import xwp.serve.compute as compute

    for setting, expected in ((None, True), ("0", False)):
        if setting is None:
            monkeypatch.delenv("XWP_COMPUTE_LANE", raising=False)
        else:
            monkeypatch.setenv("XWP_COMPUTE_LANE", setting)
        monkeypatch.setattr(compute, "_EXECUTOR", None)
        ex = compute.get_executor()
        try:
            assert ex.lane is expected and len(ex._threads) == ex.workers + expected
        finally:
            ex.shutdown()
    monkeypatch.setattr(compute, "_EXECUTOR", None)


def test_the_lane_leaves_the_workers_thread_count():
    """torch keeps one thread count per process: the lane must not set its own over the worker's."""
    before = torch.get_num_threads()
    ex = ComputeExecutor(threads=2, lane=True)
    try:
        assert ex.submit(lambda: None, priority=INTERACTIVE).result(WAIT) is None  # the lane has started
        assert ex.submit(torch.get_num_threads, priority=BACKGROUND).result(WAIT) == 2
    finally:
        ex.shutdown()
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(__import__("os"), "setpriority"), reason="no per-thread priorities here")
def test_the_worker_lowers_its_own_priority_and_the_lane_does_not():
    """nice: the worker thread (trainings, comparisons) yields the CPU to pages; the lane and the process do not."""
    import os

    def own_nice():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = own_nice()
    ex = ComputeExecutor(threads=1, lane=True, nice=5)
    started, release = threading.Event(), threading.Event()
    try:
        worker = ex.submit(lambda: (started.set(), release.wait(WAIT), own_nice())[2], priority=BACKGROUND)
        assert started.wait(WAIT)  # the worker is busy: the next interactive request goes to the lane
        assert ex.submit(own_nice, priority=INTERACTIVE).result(WAIT) == before
        release.set()
        assert worker.result(WAIT) == before + 5
        assert own_nice() == before
    finally:
        release.set()
        ex.shutdown()

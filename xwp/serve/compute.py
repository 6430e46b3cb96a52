"""One bounded compute executor per process: priorities, batching, chunked long jobs, Stop.

Session threads calling torch at once oversubscribe the cores and run 20 strokes as 20 small
calls. Instead all compute goes through :func:`get_executor`: ``workers`` threads
(default 1) own the cores and serve one priority queue (:data:`INTERACTIVE` strokes before
:data:`NORMAL` before :data:`BACKGROUND` work); waiting requests with one batch key run as ONE
call on the concatenated inputs (only per-image deterministic methods, :func:`is_batchable`);
long jobs run chunk by chunk with progress and Stop (:class:`Job`); a full queue refuses with
an :class:`~xwp.errors.XWPError`. Design and API: docs/app.md, "Compute queue".

A request's Future carries ``seconds`` (the time of the call that produced it; a merged call's
time is shared by its requests) and ``batch_size`` once it resolves.

Batched results equal unbatched ones within float rounding, not bit for bit: BLAS picks other
kernels for another number of rows (float64 XWP: at most 1e-13 apart, tests/test_compute.py).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from xwp.config import setting
from xwp.errors import XWPError
from xwp.serve.batching import attribute_batch, is_batchable, predict_batch
from xwp.serve.batching import batch_key as batch_key  # re-exported: the key explain requests merge under

#: priorities: a lower number runs first
INTERACTIVE, NORMAL, BACKGROUND = 0, 1, 2


class JobCancelled(XWPError):
    """A long job was stopped (its :meth:`Job.cancel` was called) at a chunk boundary."""


# --------------------------------------------------------------------------- queue entries


@dataclass(eq=False)
class _Call:
    """One plain request: ``fn(*args, **kwargs)`` into ``future``."""

    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    future: Future = field(default_factory=Future)
    size: int = 1


@dataclass(eq=False)
class _Batch:
    """Requests that share a batch key; ``fn(items) -> results`` runs them as one call."""

    key: Hashable
    fn: Callable[[list[Any]], Sequence[Any]]
    items: list[Any] = field(default_factory=list)
    futures: list[Future] = field(default_factory=list)
    closed: bool = False  # taken by a worker: no more items join

    @property
    def size(self) -> int:
        """Requests in this batch (each counts against the queue bound)."""
        return len(self.items)


@dataclass(eq=False)
class Job:
    """A long job (training, a comparison) run chunk by chunk; poll it from a session thread.

    ``future`` resolves to the job's return value, or fails with :class:`JobCancelled` after
    :meth:`cancel`, or with the job's own exception. ``progress`` is the latest value the job
    reported (e.g. ``(fraction, message)``).
    """

    future: Future = field(default_factory=Future)
    progress: Any = None
    priority: int = BACKGROUND
    _gen: Generator | None = None
    _callback: Callable[[Any], None] | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _started: bool = False
    size: int = 1

    def cancel(self) -> None:
        """Stop the job at its next chunk boundary (a queued job never starts)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def done(self) -> bool:
        """Whether the job finished, failed or was stopped."""
        return self.future.done()

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value (raises what the job raised, or :class:`JobCancelled`)."""
        return self.future.result(timeout)

    def _report(self, value: Any) -> None:
        """Keep ``value`` as the latest progress and pass it to the callback."""
        self.progress = value
        if self._callback is not None:
            self._callback(value)


class TaskContext:
    """What :meth:`ComputeExecutor.submit_task` passes to its function: ``tick`` between chunks."""

    def __init__(self, executor: ComputeExecutor, job: Job):
        self._executor, self.job = executor, job

    @property
    def cancelled(self) -> bool:
        """Whether Stop was requested (a task may finish gracefully, e.g. keep the last epoch)."""
        return self.job.cancelled

    def tick(self, progress: Any = None) -> bool:
        """Report ``progress``, run waiting higher-priority requests, raise :class:`JobCancelled` on Stop."""
        if self.job.cancelled:
            raise JobCancelled("stopped")
        if self._executor._stopped:
            raise XWPError("the compute executor was shut down")
        if progress is not None:
            self.job._report(progress)
        self._executor._run_waiting_requests(self.job.priority)
        return True


# --------------------------------------------------------------------------- the executor


class ComputeExecutor:
    """A bounded priority queue served by ``workers`` threads that own the cores (or the GPU).

    Args:
        workers: worker threads (default 1: one owner of every core).
        threads: torch intra-op threads of each worker (default: cores // workers).
        max_pending: requests and jobs that may wait; one more raises :class:`XWPError`.
        max_batch: most requests merged into one call.
        lane: one more thread that serves only :data:`INTERACTIVE` requests, never jobs, so a
            stroke does not wait for the chunk of a comparison that is running. It leaves the
            torch thread count alone (torch keeps one per process: setting it would change the
            workers' count too).
        nice: how much the workers (not the lane) lower their own CPU priority (Linux, per thread),
            so that trainings and comparisons take the CPU the browsers and page scripts leave.
    """

    def __init__(
        self,
        workers: int = 1,
        threads: int | None = None,
        max_pending: int = 256,
        max_batch: int = 64,
        lane: bool = False,
        nice: int = 0,
    ):
        self.workers = max(1, int(workers))
        self.threads = max(1, int(threads or (os.cpu_count() or 1) // self.workers))
        self.max_pending = max(1, int(max_pending))
        self.max_batch = max(1, int(max_batch))
        self._heap: list[tuple[int, int, Any]] = []
        self._open: dict[tuple[Hashable, int], _Batch] = {}  # batches still taking items
        self._pending = 0
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self.stats = {"calls": 0, "batched_requests": 0, "chunks": 0}
        self._threads = [
            threading.Thread(target=self._worker, name=f"xwp-compute-{i}", daemon=True) for i in range(self.workers)
        ]
        self.lane, self.nice = bool(lane), max(0, int(nice))
        if self.lane:
            self._threads.append(threading.Thread(target=self._worker, args=(True,), name="xwp-lane", daemon=True))
        for t in self._threads:
            t.start()

    # ----------------------------------------------------------------------- submitting

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = INTERACTIVE, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; its Future resolves to the return value."""
        call = _Call(fn, args, kwargs)
        with self._cond:
            self._admit(1)
            self._push(priority, call)
        return call.future

    def submit_batch(
        self, key: Hashable, fn: Callable[[list[Any]], Sequence[Any]], item: Any, priority: int = INTERACTIVE
    ) -> Future:
        """Queue ``item``; waiting items of the same ``key`` and priority run as one ``fn(items)``.

        ``fn`` gets the list of items and must return one result per item, in order. If the
        merged call raises, each item is retried alone, so only the culprit's Future fails.
        """
        future: Future = Future()
        with self._cond:
            self._admit(1)
            batch = self._open.get((key, priority))
            if batch is None or batch.closed or batch.size >= self.max_batch:
                batch = _Batch(key, fn)
                self._open[(key, priority)] = batch
                self._push(priority, batch)
            batch.items.append(item)
            batch.futures.append(future)
            self._pending += 1
            self._cond.notify_all()
        return future

    def attribute(
        self,
        method: Any,
        inputs: torch.Tensor,
        target: Any = None,
        *,
        key: Hashable | None = None,
        priority: int = INTERACTIVE,
    ) -> Future:
        """``method.attribute(inputs, target=target)`` on a worker; merged with like requests if batchable.

        ``key`` says which requests may merge (see :func:`batch_key`); by default only
        requests for the same method object and target mode. Inputs of other shapes, dtypes or
        devices never merge; a batch runs the method object of its first request. A method that
        is not :func:`is_batchable` runs alone.
        """
        if not is_batchable(method):
            return self.submit(method.attribute, inputs, target=target, priority=priority)
        shape = (tuple(inputs.shape[1:]), inputs.dtype, inputs.device)
        key = (key if key is not None else id(method), target is None, shape)
        return self.submit_batch(
            ("attr", key), lambda items, m=method: attribute_batch(m, items), (inputs, target), priority
        )

    def predict(self, model: torch.nn.Module, inputs: torch.Tensor, *, priority: int = INTERACTIVE) -> Future:
        """Softmax probabilities ``(n, C)`` of ``inputs``; concurrent requests for one model merge."""
        key = ("predict", id(model), tuple(inputs.shape[1:]), inputs.dtype, inputs.device)
        return self.submit_batch(key, lambda items, m=model: predict_batch(m, items), inputs, priority)

    def submit_job(
        self,
        gen: Generator[Any, None, Any],
        *,
        priority: int = BACKGROUND,
        progress: Callable[[Any], None] | None = None,
    ) -> Job:
        """Run a generator one chunk (``next``) at a time; what it yields is its progress.

        Between chunks the job goes back into the queue behind every waiting request of
        higher or equal priority. Its return value resolves :attr:`Job.future`.
        """
        job = Job(priority=priority, _gen=gen, _callback=progress)
        with self._cond:
            self._admit(1)
            self._push(priority, job)
        return job

    def submit_task(
        self,
        fn: Callable[[TaskContext], Any],
        *,
        priority: int = BACKGROUND,
        progress: Callable[[Any], None] | None = None,
    ) -> Job:
        """Run ``fn(ctx)``, a function that calls ``ctx.tick(progress)`` between chunks.

        For code with a progress callback (``xwp.train``, ``xwp.evaluate``): each tick runs
        the waiting higher-priority requests inline and raises :class:`JobCancelled` after
        :meth:`Job.cancel`.
        """
        job = Job(priority=priority, _callback=progress)

        def run() -> Generator[None, None, Any]:
            return fn(TaskContext(self, job))
            yield  # a generator of one chunk: the whole function, with ticks inside

        job._gen = run()
        with self._cond:
            self._admit(1)
            self._push(priority, job)
        return job

    def pending(self) -> int:
        """Requests and jobs waiting (not yet started)."""
        with self._cond:
            return self._pending

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers; waiting requests fail with an XWPError, running jobs stop at a chunk boundary."""
        with self._cond:
            self._stopped = True
            entries = [e for _, _, e in self._heap]
            self._heap.clear()
            self._open.clear()
            self._pending = 0
            self._cond.notify_all()
        error = XWPError("the compute executor was shut down")
        for e in entries:
            if isinstance(e, Job):
                e._gen.close()
                if e._started or e.future.set_running_or_notify_cancel():
                    e.future.set_exception(error)
                continue
            for f in e.futures if isinstance(e, _Batch) else [e.future]:
                if f.set_running_or_notify_cancel():
                    f.set_exception(error)
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()

    # ----------------------------------------------------------------------- internals

    def _admit(self, n: int) -> None:
        """Refuse new work when stopped or full (call with the lock held)."""
        if self._stopped:
            raise XWPError("the compute executor was shut down")
        if self._pending + n > self.max_pending:
            raise XWPError(
                f"the server is busy: {self._pending} computations are waiting (at most {self.max_pending}); "
                "try again in a moment"
            )

    def _push(self, priority: int, entry: Any) -> None:
        """Put ``entry`` on the heap and wake every waiter (the lane waits for other entries); hold the lock."""
        heapq.heappush(self._heap, (priority, next(self._seq), entry))
        if not isinstance(entry, _Batch):  # a batch counts its items as they join
            self._pending += 1
        self._cond.notify_all()

    def _worker(self, lane: bool = False) -> None:
        """Serve the queue until shutdown (the ``lane``: only interactive requests)."""
        if not lane:
            torch.set_num_threads(self.threads)
            if self.nice and hasattr(os, "setpriority"):
                with contextlib.suppress(OSError):  # Linux: a thread id names one thread
                    tid = threading.get_native_id()
                    os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
        while True:
            with self._cond:
                while not self._stopped and not (self._lane_ready() if lane else self._heap):
                    self._cond.wait()
                if self._stopped:
                    return
                priority, _, entry = heapq.heappop(self._heap)
                self._take_with_priority(entry, priority)
            self._run(entry, priority)

    def _lane_ready(self) -> bool:
        """Whether the first entry is an interactive request (call with the lock held)."""
        return bool(self._heap) and self._heap[0][0] == INTERACTIVE and not isinstance(self._heap[0][2], Job)

    def _take_with_priority(self, entry: Any, priority: int) -> None:
        """:meth:`_take` for an entry popped at ``priority``."""
        if isinstance(entry, _Batch):
            entry.closed = True
            if self._open.get((entry.key, priority)) is entry:
                del self._open[(entry.key, priority)]
        self._pending -= entry.size

    def _run_waiting_requests(self, below: int) -> None:
        """Run every queued request (not job) with a priority number lower than ``below``."""
        while True:
            with self._cond:
                if not self._heap or self._heap[0][0] >= below or isinstance(self._heap[0][2], Job):
                    return
                priority, _, entry = heapq.heappop(self._heap)
                self._take_with_priority(entry, priority)
            self._run(entry, priority)

    def _run(self, entry: Any, priority: int) -> None:
        """Run one popped entry; never raises (errors go to the entry's futures)."""
        if isinstance(entry, _Call):
            if entry.future.set_running_or_notify_cancel():
                self.stats["calls"] += 1
                _settle(entry.future, entry.fn, *entry.args, **entry.kwargs)
        elif isinstance(entry, _Batch):
            self._run_batch(entry)
        else:
            self._run_chunk(entry, priority)

    def _run_batch(self, batch: _Batch) -> None:
        """One call for every live item of ``batch``; on failure, each item alone."""
        live = [(i, f) for i, f in zip(batch.items, batch.futures, strict=True) if f.set_running_or_notify_cancel()]
        if not live:
            return
        items = [i for i, _ in live]
        self.stats["calls"] += 1
        self.stats["batched_requests"] += len(items)
        t0 = time.perf_counter()
        try:
            results = list(batch.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except BaseException as e:  # noqa: BLE001 - retried per item so only the culprit fails
            if len(items) == 1:
                live[0][1].set_exception(e)
                return
            for item, f in live:
                self.stats["calls"] += 1
                _settle(f, lambda item=item: batch.fn([item])[0])
            return
        seconds = time.perf_counter() - t0
        for (_, f), r in zip(live, results, strict=True):
            f.seconds, f.batch_size = seconds, len(items)  # read by callers that show timings
            f.set_result(r)

    def _run_chunk(self, job: Job, priority: int) -> None:
        """Advance ``job`` by one chunk and requeue it, or settle its future."""
        if not job._started:
            job._started = True
            if not job.future.set_running_or_notify_cancel():  # its future was cancelled while queued
                job._gen.close()
                return
        if job.cancelled:
            job._gen.close()
            job.future.set_exception(JobCancelled("stopped"))
            return
        self.stats["chunks"] += 1
        try:
            value = next(job._gen)
        except StopIteration as stop:
            job.future.set_result(stop.value)
            return
        except BaseException as e:  # noqa: BLE001 - belongs to the job's future
            job.future.set_exception(e)
            return
        try:
            if value is not None:
                job._report(value)
        except BaseException as e:  # noqa: BLE001 - a failing progress callback ends the job
            job._gen.close()
            job.future.set_exception(e)
            return
        with self._cond:
            if self._stopped:
                job._gen.close()
                job.future.set_exception(XWPError("the compute executor was shut down"))
                return
            self._push(priority, job)


def _settle(future: Future, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Set ``future`` to ``fn(*args, **kwargs)`` or to the exception it raised (``future.seconds``: its time)."""
    t0 = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
        future.seconds, future.batch_size = time.perf_counter() - t0, 1
        future.set_result(result)
    except BaseException as e:  # noqa: BLE001 - belongs to the caller's future
        future.set_exception(e)


# --------------------------------------------------------------------------- the process-wide one

_EXECUTOR: ComputeExecutor | None = None
_LOCK = threading.Lock()


def get_executor() -> ComputeExecutor:
    """The process-wide executor, made on first use from the ``XWP_COMPUTE_*`` settings.

    ``XWP_COMPUTE_WORKERS`` / ``_THREADS`` / ``_QUEUE`` / ``_BATCH`` / ``_LANE`` / ``_NICE``.
    Defaults: one worker with ``cores - 1`` torch threads (at least 1), leaving a core to the
    Streamlit session threads (script runs, PNG encoding, websockets), which need the CPU at
    the same moments as the strokes they wait for; the interactive lane (``XWP_COMPUTE_LANE=0``
    turns it off), so strokes do not wait for a comparison's chunk; and the worker at nice +10
    (``XWP_COMPUTE_NICE``), so long jobs get the CPU the pages leave (docs/app.md, "Compute queue").
    """
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            workers = max(1, setting("XWP_COMPUTE_WORKERS"))
            _EXECUTOR = ComputeExecutor(
                workers=workers,
                threads=setting("XWP_COMPUTE_THREADS") or max(1, (os.cpu_count() or 1) // workers - 1),
                max_pending=setting("XWP_COMPUTE_QUEUE"),
                max_batch=setting("XWP_COMPUTE_BATCH"),
                lane=setting("XWP_COMPUTE_LANE") > 0,
                nice=setting("XWP_COMPUTE_NICE"),
            )
        return _EXECUTOR

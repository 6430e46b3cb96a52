"""Long jobs (trainings, comparisons) that outlive the page that started them.

A job runs on the process-wide compute executor (:func:`xwp.serve.compute.get_executor`, as a
``submit_task``), not in the page's script run, so switching pages or closing the tab does not
stop it. It is registered under a string *owner* id (the session's workspace, else the
browser session, see :func:`owner`) in one process-wide :class:`Registry`. Every
page's sidebar shows the owner's running jobs with progress and a Stop button
(:func:`sidebar_panel`); a job ends only when it finishes, fails or its owner presses Stop.
When it is done, the next script run of the owner calls its ``collect`` function in the
session's own thread (:func:`collect`), which e.g. adds the trained model to the session.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from xwp.app.keys import OWNER_KEY
from xwp.app.session import flash
from xwp.app.workspace_glue import workspace
from xwp.config import setting
from xwp.errors import XWPError
from xwp.serve.compute import BACKGROUND, ComputeExecutor, Job, JobCancelled, TaskContext, get_executor

#: how often the sidebar and the Train page redraw a running job's progress (seconds), when few jobs run
REFRESH_SECONDS = 1.0
#: one second more between redraws per this many jobs running in the process (see :func:`refresh_seconds`)
JOBS_PER_SECOND_OF_REFRESH = 4


@dataclass(eq=False)
class JobRecord:
    """One registered job: who owns it, what it is, its compute :class:`~xwp.serve.compute.Job`."""

    id: str
    owner: str
    kind: str  # "training", "comparison", ...
    label: str  # what the sidebar says, e.g. "training “small digits”"
    job: Job
    collect: Callable[[JobRecord], None] | None = None  # run once in the owner's script thread when done
    started: float = field(default_factory=time.time)
    finished: float | None = None
    collected: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # what the task shares with its page (e.g. history)

    @property
    def done(self) -> bool:
        """Whether the job finished, failed or was stopped."""
        return self.job.done()

    @property
    def stopping(self) -> bool:
        """Whether Stop was pressed and the job has not ended yet."""
        return self.job.cancelled and not self.done

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] (0 until the task reports)."""
        p = self.job.progress
        return float(min(max(p[0], 0.0), 1.0)) if isinstance(p, tuple) and p else 0.0

    @property
    def message(self) -> str:
        """The task's latest progress text, or "waiting" while it is queued."""
        p = self.job.progress
        if isinstance(p, tuple) and len(p) > 1:
            return str(p[1])
        return "waiting for the compute queue" if not self.job._started else "starting"

    def outcome(self) -> tuple[Any, BaseException | None]:
        """``(result, None)`` of a finished job, or ``(None, error)`` (``JobCancelled`` after Stop)."""
        try:
            return self.job.result(0), None
        except BaseException as e:  # noqa: BLE001 - returned to the caller, who shows it
            return None, e


class Registry:
    """Jobs by owner, for the whole process; thread-safe.

    Args:
        executor: where jobs run (default: :func:`xwp.serve.compute.get_executor`, looked up per start).
        max_running: running jobs one owner may have at once; one more is refused with an XWPError.
        keep_seconds: finished jobs nobody collected (a closed tab) are dropped after this long.
    """

    def __init__(self, executor: ComputeExecutor | None = None, max_running: int = 3, keep_seconds: float = 3600):
        self._executor = executor
        self.max_running = max_running
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()
        self._records: dict[str, list[JobRecord]] = {}

    def start(
        self,
        owner: str,
        kind: str,
        label: str,
        fn: Callable[[TaskContext, JobRecord], Any],
        *,
        collect: Callable[[JobRecord], None] | None = None,
        priority: int = BACKGROUND,
    ) -> JobRecord:
        """Run ``fn(ctx, record)`` as a job of ``owner`` (it calls ``ctx.tick((fraction, text))`` between chunks)."""
        self.prune()
        with self._lock:
            mine = self._records.setdefault(owner, [])
            running = [r for r in mine if not r.done]
            if len(running) >= self.max_running:
                raise XWPError(
                    f"{len(running)} of your jobs are still running (at most {self.max_running}); "
                    "wait for one or stop it in the sidebar"
                )
            record = JobRecord(uuid.uuid4().hex[:10], owner, kind, label, Job(), collect)
            executor = self._executor or get_executor()
            record.job = executor.submit_task(lambda ctx: fn(ctx, record), priority=priority)
            record.job.future.add_done_callback(lambda _f: setattr(record, "finished", time.time()))
            mine.append(record)
        return record

    def records(self, owner: str, kind: str | None = None) -> list[JobRecord]:
        """The owner's jobs not yet collected, oldest first (optionally of one ``kind``)."""
        with self._lock:
            return [r for r in self._records.get(owner, []) if not r.collected and kind in (None, r.kind)]

    def running(self, owner: str, kind: str | None = None) -> list[JobRecord]:
        """The owner's jobs that have not ended."""
        return [r for r in self.records(owner, kind) if not r.done]

    def running_count(self) -> int:
        """Jobs of all owners that have not ended."""
        with self._lock:
            return sum(not r.done for mine in self._records.values() for r in mine)

    def get(self, owner: str, job_id: str) -> JobRecord | None:
        """The owner's job ``job_id`` (None if unknown or someone else's)."""
        with self._lock:
            return next((r for r in self._records.get(owner, []) if r.id == job_id), None)

    def stop(self, owner: str, job_id: str) -> bool:
        """Ask the owner's job to stop at its next chunk boundary; False if there is no such running job."""
        record = self.get(owner, job_id)
        if record is None or record.done:
            return False
        record.job.cancel()
        return True

    def take_finished(self, owner: str) -> list[JobRecord]:
        """The owner's ended jobs not yet collected, marked collected (each is returned once)."""
        with self._lock:
            mine = self._records.get(owner, [])
            done = [r for r in mine if r.done and not r.collected]
            for r in done:
                r.collected = True
            self._records[owner] = [r for r in mine if not r.collected]
            if not self._records[owner]:
                del self._records[owner]
        return done

    def prune(self, now: float | None = None) -> None:
        """Drop ended jobs that nobody collected for ``keep_seconds`` (their owner is gone)."""
        now = time.time() if now is None else now
        with self._lock:
            for owner in list(self._records):
                kept = [r for r in self._records[owner] if not r.done or now - (r.finished or now) < self.keep_seconds]
                if kept:
                    self._records[owner] = kept
                else:
                    del self._records[owner]


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> Registry:
    """The process-wide registry (a module global: "Clear cache" in Streamlit's menu must not drop jobs)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry(max_running=setting("XWP_MAX_JOBS"))
        return _REGISTRY


# --------------------------------------------------------------------------- the session's side


def owner() -> str:
    """The owner id of this session: its workspace's (so a reload or another tab of it sees the jobs), else its own.

    Without a workspace (none could be opened) the id is made on first use and kept in
    ``st.session_state``: the jobs then belong to this browser session only.
    """
    ws = workspace()
    if ws is not None:
        return f"workspace:{ws.id}"
    return st.session_state.setdefault(OWNER_KEY, uuid.uuid4().hex)


def start(
    owner_id: str,
    kind: str,
    label: str,
    fn: Callable[[TaskContext, JobRecord], Any],
    collect: Callable[[JobRecord], None] | None = None,
    priority: int = BACKGROUND,
) -> JobRecord:
    """:meth:`Registry.start` on the process-wide registry."""
    return registry().start(owner_id, kind, label, fn, collect=collect, priority=priority)


def running(owner_id: str, kind: str | None = None) -> list[JobRecord]:
    """The running jobs of ``owner_id`` (optionally of one ``kind``)."""
    return registry().running(owner_id, kind)


def stop(owner_id: str, job_id: str) -> bool:
    """Stop a job of ``owner_id`` at its next chunk boundary."""
    return registry().stop(owner_id, job_id)


def collect(owner_id: str | None = None) -> list[JobRecord]:
    """Run the ``collect`` function of every ended, uncollected job of this session (call early in every run).

    Returns the jobs collected now (empty when none ended since the last call).
    """
    records = registry().take_finished(owner_id or owner())
    for record in records:
        if record.collect is not None:
            record.collect(record)
        else:
            _, error = record.outcome()
            if error is not None and not isinstance(error, JobCancelled):
                flash(f"{record.label} failed: {describe(error)}")
    return records


def rerun_app() -> None:
    """Ask for a full run from a timed fragment that has just collected a job (the sidebar then lists its model).

    Best effort: Streamlit 1.67 sometimes drops a rerun asked from a timed fragment under
    load, but the job is already collected, so only the model list waits for the next run.
    """
    st.rerun(scope="app")


def describe(error: BaseException) -> str:
    """A one-line message for a job's error (an XWPError's text, else the exception's class and text)."""
    return str(error) if isinstance(error, XWPError) else f"{type(error).__name__}: {error}"


def stop_button(record: JobRecord, key: str, label: str = "Stop") -> None:
    """A Stop button for ``record`` (shows "Stopping…" once pressed)."""
    if record.stopping:
        st.caption("Stopping at the next step…")
        return
    if st.button(label, key=key, icon=":material/stop_circle:", help="Stop this job; a training keeps its last epoch."):
        registry().stop(record.owner, record.id)
        st.caption("Stopping at the next step…")


def refresh_seconds() -> float:
    """How often the job panels redraw: every second, one second more per 4 jobs running in the process.

    Capped at ``XWP_JOB_REFRESH_MAX_S`` (default 5; 1 keeps every second). Each redraw is a
    script run on the server and a repaint in the browser, for every session with a job: 20
    sessions with a job each meant 40 redraws a second on 2 cores, competing with the strokes.
    """
    slowest = max(REFRESH_SECONDS, float(setting("XWP_JOB_REFRESH_MAX_S")))
    steps = max(1, math.ceil(registry().running_count() / JOBS_PER_SECOND_OF_REFRESH))
    return min(slowest, REFRESH_SECONDS * steps)


def timed_fragment(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` as a fragment that redraws itself every :func:`refresh_seconds` (chosen at each full run).

    Streamlit names a fragment after ``fn`` and its place on the page, so wrapping ``fn`` anew
    with another interval keeps the same fragment.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> None:
        return st.fragment(fn, run_every=refresh_seconds())(*args, **kwargs)

    return call


@timed_fragment
def _panel(owner_id: str) -> None:
    """The sidebar's list of running jobs, redrawn every :func:`refresh_seconds`; collects the ones that ended.

    Collecting here (not in the full run a finished job asks for, which Streamlit 1.67
    sometimes dropped when asked from a timed fragment under load) adds a trained model to the
    session at once; then a full run is asked for (:func:`rerun_app`) so that the model list
    and the toast outside the fragment show it without waiting for the user's next click.
    """
    if collect(owner_id):
        rerun_app()
    records = registry().records(owner_id)
    for r in records:
        st.progress(r.fraction, text=panel_text(r))
        stop_button(r, key=f"xwp_job_stop_{r.id}")


def panel_text(record: JobRecord) -> str:
    """A sidebar job's line: what runs, how far it is as a percentage, and its own progress message."""
    text = f"Running: {record.label} · {record.fraction:.0%}"
    return f"{text} · {record.message}" if record.message else text


def sidebar_panel() -> None:
    """Draw the running jobs of this session in the sidebar (nothing when there are none)."""
    owner_id = owner()
    if registry().records(owner_id):
        with st.sidebar:
            _panel(owner_id)

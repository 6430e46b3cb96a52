"""xwp.app.jobs: long jobs per owner on the compute executor, independent of any page's script run."""

from __future__ import annotations

import threading
import time

import pytest

from xwp.app.jobs import Registry
from xwp.errors import XWPError
from xwp.serve.compute import ComputeExecutor, JobCancelled


@pytest.fixture
def executor():
    ex = ComputeExecutor(workers=1, threads=1, max_pending=8)
    yield ex
    ex.shutdown()


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def counting_task(steps: int, gate: threading.Event | None = None):
    """A job of ``steps`` chunks that reports (fraction, text) and waits for ``gate`` before each."""

    def run(ctx, record):
        for i in range(steps):
            if gate is not None:
                gate.wait(30)
            ctx.tick(((i + 1) / steps, f"step {i + 1}/{steps}"))
            record.extra["last"] = i + 1
        return steps

    return run


def test_a_job_runs_reports_progress_and_is_collected_once(executor):
    reg = Registry(executor)
    record = reg.start("alice", "training", "training “a”", counting_task(5))
    wait_until(lambda: record.done)
    assert record.outcome() == (5, None)
    assert record.fraction == 1.0 and record.message == "step 5/5" and record.extra["last"] == 5
    assert reg.running("alice") == [] and reg.records("alice") == [record]
    assert reg.take_finished("alice") == [record]
    assert reg.take_finished("alice") == []  # collected once
    assert reg.records("alice") == []


def test_stop_ends_a_job_at_its_next_chunk(executor):
    reg = Registry(executor)
    gate = threading.Event()
    record = reg.start("alice", "comparison", "comparison", counting_task(1000, gate))
    assert [r.id for r in reg.running("alice", "comparison")] == [record.id]
    assert reg.running("alice", "training") == []
    assert reg.stop("alice", record.id)
    assert record.stopping
    gate.set()
    wait_until(lambda: record.done)
    result, error = record.outcome()
    assert result is None and isinstance(error, JobCancelled)
    assert record.extra.get("last", 0) < 1000
    assert not reg.stop("alice", record.id)  # already ended


def test_owners_are_isolated(executor):
    reg = Registry(executor)
    gate = threading.Event()
    record = reg.start("alice", "training", "t", counting_task(3, gate))
    try:
        assert reg.get("bob", record.id) is None
        assert not reg.stop("bob", record.id)
        assert reg.running("bob") == [] and reg.take_finished("bob") == []
        assert not record.job.cancelled
    finally:
        gate.set()
    wait_until(lambda: record.done)
    assert reg.take_finished("bob") == [] and reg.take_finished("alice") == [record]


def test_too_many_running_jobs_are_refused(executor):
    reg = Registry(executor, max_running=2)
    gate = threading.Event()
    try:
        for _ in range(2):
            reg.start("alice", "training", "t", counting_task(2, gate))
        with pytest.raises(XWPError, match="at most 2"):
            reg.start("alice", "training", "t", counting_task(2, gate))
        reg.start("bob", "training", "t", counting_task(2, gate))  # another owner is not affected
    finally:
        gate.set()
    wait_until(lambda: not reg.running("alice") and not reg.running("bob"))


def test_a_failing_job_keeps_its_error_and_the_worker_survives(executor):
    reg = Registry(executor)

    def boom(ctx, record):
        raise XWPError("no data")

    failed = reg.start("alice", "training", "t", boom)
    wait_until(lambda: failed.done)
    assert str(failed.outcome()[1]) == "no data"
    ok = reg.start("alice", "training", "t", counting_task(2))
    wait_until(lambda: ok.done)
    assert ok.outcome() == (2, None)


def test_a_full_executor_refuses_with_a_message(executor):
    reg = Registry(executor, max_running=20)
    gate = threading.Event()
    try:
        started = [reg.start("alice", "t", "t", counting_task(1, gate))]
        wait_until(lambda: started[0].job._started)  # on the worker, no longer waiting
        started += [reg.start("alice", "t", "t", counting_task(1, gate)) for _ in range(8)]  # the queue is full
        with pytest.raises(XWPError, match="busy"):
            reg.start("alice", "t", "t", counting_task(1, gate))
    finally:
        gate.set()
    wait_until(lambda: all(r.done for r in started))


def test_uncollected_jobs_expire(executor):
    reg = Registry(executor, keep_seconds=60)
    record = reg.start("gone", "training", "t", counting_task(1))
    wait_until(lambda: record.done and record.finished is not None)
    reg.prune(now=record.finished + 30)
    assert reg.records("gone") == [record]
    reg.prune(now=record.finished + 61)
    assert reg.records("gone") == []


def test_warm_up_imports_the_lazy_modules_once_off_the_compute_worker():
    """The app imports torch._dynamo & co. in its own thread at start, not in the first training.

    IPython (which captum imports) is imported before ``warm_up`` returns: a figure drawn while
    another thread was half-way through importing it failed (16 of 20 sessions of a load test).
    """
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "from xwp.app import work\n"
        "assert 'torch._dynamo' not in sys.modules, 'already imported: the test proves nothing'\n"
        "assert 'IPython' not in sys.modules\n"
        "t = work.warm_up()\n"
        "assert work.warm_up() is t and t.name == 'xwp-warm-up' and t is not threading.current_thread()\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('IPython'):  # fully imported before warm_up returns: matplotlib reads it\n"
        "    assert hasattr(sys.modules['IPython'], 'version_info')\n"
        "t.join(120)\n"
        "missing = [m for m in work.WARM_MODULES if m not in sys.modules]\n"
        "assert not missing, missing\n"
        "import gc\n"
        "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()  # start-up objects out of the GC's walk\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_streamlit_does_not_collect_garbage_after_every_script_run():
    """runner.postScriptGC off: each fragment redraw's gc.collect(2) held the GIL ~300 ms."""
    from pathlib import Path

    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


def test_job_panels_redraw_slower_when_many_jobs_run(executor, monkeypatch):
    """One redraw a second with few jobs; one second more per 4 running jobs, capped."""
    from xwp.app import jobs

    reg = Registry(executor, max_running=50)
    monkeypatch.setattr(jobs, "registry", lambda: reg)
    monkeypatch.delenv("XWP_JOB_REFRESH_MAX_S", raising=False)
    gate = threading.Event()
    assert reg.running_count() == 0 and jobs.refresh_seconds() == 1.0
    seen = {}
    for n in range(1, 8):  # queued jobs count as running: they have not ended
        reg.start(f"owner-{n}", "training", f"job {n}", counting_task(1, gate))
        seen[n] = jobs.refresh_seconds()
    assert reg.running_count() == 7
    assert seen == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 2.0, 6: 2.0, 7: 2.0}
    monkeypatch.setenv("XWP_JOB_REFRESH_MAX_S", "1")
    assert jobs.refresh_seconds() == 1.0
    monkeypatch.setattr(reg, "running_count", lambda: 100)
    monkeypatch.delenv("XWP_JOB_REFRESH_MAX_S")
    assert jobs.refresh_seconds() == 5.0
    gate.set()
    monkeypatch.undo()
    wait_until(lambda: reg.running_count() == 0)

"""The two private Streamlit APIs the app reads, in one place (checked against Streamlit 1.67).

- ``PagesManager.uses_pages_directory``: True until ``st.navigation`` has run once in this
  server process; meanwhile Streamlit would run a page of pages/ on its own
  (:func:`xwp.app.frame.routed` sends such a run through the router).
- The script run's ``script_requests`` (``_state``, ``_rerun_data``): whether Streamlit asked
  the running script to stop or rerun, so that a long wait (Compare's progress bar) hands
  over at once instead of sleeping on (:func:`run_superseded`).

``get_script_run_ctx`` is public enough (documented for threads) and is read here too.
Every read falls back to "nothing unusual" if the names change; ``tests/app/test_internals.py``
fails when the installed Streamlit no longer has them, so an upgrade cannot silently turn
them off.
"""

from __future__ import annotations


def in_script_run() -> bool:
    """Whether this thread runs a Streamlit script (False in a worker thread or a plain test)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True) is not None


def uses_pages_directory() -> bool:
    """Whether Streamlit still treats pages/ as an old-style multipage app (before the first ``st.navigation``)."""
    from streamlit.runtime.pages_manager import PagesManager

    return bool(getattr(PagesManager, "uses_pages_directory", False))


def run_superseded() -> bool:
    """Whether Streamlit asked this script run to stop, or to rerun the whole app (e.g. a new stroke).

    A fragment's timed rerun (the sidebar's job panel) does not preempt a script run, so it
    does not count. Anything unexpected: False.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    requests = getattr(get_script_run_ctx(suppress_warning=True), "script_requests", None)
    name = getattr(getattr(requests, "_state", None), "name", "CONTINUE")
    if name == "STOP":
        return True
    if name != "RERUN":
        return False
    data = getattr(requests, "_rerun_data", None)
    return not (getattr(data, "fragment_id_queue", None) and not getattr(data, "is_fragment_scoped_rerun", False))

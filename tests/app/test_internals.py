"""The private Streamlit names xwp.app.internals reads still exist in the installed Streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_private_names_exist():
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequests

    assert hasattr(PagesManager, "uses_pages_directory")
    requests = ScriptRequests()
    assert requests._state.name == "CONTINUE" and hasattr(requests, "_rerun_data")
    data = RerunData()
    assert hasattr(data, "fragment_id_queue") and hasattr(data, "is_fragment_scoped_rerun")


def test_outside_a_script_run_nothing_is_superseded():
    from xwp.app.internals import in_script_run, run_superseded, uses_pages_directory

    assert not in_script_run() and not run_superseded()
    assert isinstance(uses_pages_directory(), bool)


def test_only_internals_imports_streamlit_runtime():
    offenders = []
    sources = [*sorted((ROOT / "xwp").rglob("*.py")), *sorted((ROOT / "pages").glob("*.py")), ROOT / "streamlit_app.py"]
    for path in sources:
        if path.name == "internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamlit.runtime"):
                offenders.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert not offenders, offenders

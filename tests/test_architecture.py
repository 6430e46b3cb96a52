"""The package's shape: imports point down, no cycles, rooms in order, small files, Streamlit only in xwp/app/."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xwp"
MAX_LINES = 500
#: the rooms of xwp from the bottom up: a module may import its own room and the rooms below it only
ROOMS = [
    {"xwp._version", "xwp.errors", "xwp.config", "xwp.devices", "xwp.safety"},
    {"xwp.models"},
    {"xwp.data"},
    {"xwp.checkpoint"},
    {"xwp.train"},
    {"xwp.attribution"},
    {"xwp.evaluation", "xwp.experimental"},
    {"xwp.viz"},
    {"xwp.study"},
    {"xwp.serve"},
    {"xwp.cli"},
    {"xwp.app"},
]
MAX_TOP_LEVEL = 12


def modules() -> list[str]:
    """Dotted names of every module under xwp/."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


KNOWN = set(modules())


def own_files() -> list[Path]:
    """Python files under xwp/ that the rules apply to."""
    return sorted(PACKAGE.rglob("*.py"))


def imported_xwp_modules(path: Path) -> set[str]:
    """The xwp modules a file imports (anywhere in the file, including inside functions)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "xwp"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xwp":
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= subs
            if not subs <= KNOWN:  # "from xwp.viz import plots" names a submodule, not the package's facade
                found.add(node.module)
    return found


def test_every_module_imports_in_a_fresh_interpreter():
    """Every module imports (one fresh interpreter for all: each one would cost seconds of torch start-up).

    Importing any ``xwp.x`` runs ``xwp/__init__`` first, so per-module interpreters would not
    catch more cycles than this; :func:`test_module_import_graph_has_no_cycles` checks the graph.
    """
    names = [n for n in modules() if n != "xwp.__main__" and not n.startswith("xwp.app")]
    imports_in_a_fresh_interpreter(names)


def test_module_import_graph_has_no_cycles():
    """Build the graph of xwp-internal imports and look for a cycle (depth-first search)."""
    known = set(modules())
    graph = {}
    for path in own_files():
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = {m for m in imported_xwp_modules(path) if m in known and m != name}
        if name != "xwp":
            # "from xwp import plots" names a submodule; "xwp" itself is the re-export facade
            targets.discard("xwp")
        graph[name] = targets
    # a package's __init__ (its facade) imports its children; children must not import it back
    facades = {n for n in known if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    for name, targets in graph.items():
        for facade in facades:
            if name.startswith(facade + ".") and name != facade:
                assert facade not in targets, f"{name} imports its package facade {facade} (an upward import)"
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state and node not in facades:
            visit(node, [])


@pytest.mark.parametrize("low", ["xwp.devices", "xwp._version", "xwp.errors", "xwp.config"])
def test_low_modules_import_nothing_above_them(low):
    path = PACKAGE / (low.split(".")[1] + ".py")
    allowed = {"xwp.errors", "xwp.config", "xwp.devices", "xwp._version"}
    imported = imported_xwp_modules(path)  # modules and the names taken from them (xwp.errors.XWPError)
    assert {m for m in imported if not any(m == a or m.startswith(a + ".") for a in allowed)} == set()


def test_helpers_come_from_devices_not_from_attribution():
    for name in ("evaluation/metrics.py", "train.py", "checkpoint.py"):
        assert not any(m.startswith("xwp.attribution") for m in imported_xwp_modules(PACKAGE / name)), name
    protocol = PACKAGE / "evaluation" / "protocol.py"
    from_attribution = {m for m in imported_xwp_modules(protocol) if m.startswith("xwp.attribution.")}
    assert from_attribution == {f"xwp.attribution.{n}" for n in ("METHODS", "make_method", "methods_tagged")}
    assert "xwp" not in imported_xwp_modules(PACKAGE / "checkpoint.py")  # reads xwp._version instead


def test_no_python_file_under_xwp_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in own_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def imported_names(tree: ast.AST) -> list[str]:
    """Every module name an ``import`` or ``from ... import`` in ``tree`` names."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def imports_in_a_fresh_interpreter(names: list[str], prefix: str = "") -> None:
    """Import ``prefix + name`` for every name in one new interpreter; fail with its error."""
    code = f"import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module({prefix!r} + m)\n"
    result = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_only_xwp_app_imports_streamlit():
    offenders = []
    for path in own_files():
        if "app" in path.relative_to(PACKAGE).parts[:-1]:
            continue
        names = imported_names(ast.parse(path.read_text()))
        if any(n.split(".")[0] in ("streamlit", "streamlit_drawable_canvas") for n in names):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"streamlit imported outside xwp/app/: {sorted(set(offenders))}"


def room_of(module: str) -> int:
    """Index in :data:`ROOMS` of the room holding ``module`` (its package, or itself at the top level)."""
    for i, room in enumerate(ROOMS):
        if any(module == r or module.startswith(r + ".") for r in room):
            return i
    raise AssertionError(f"{module} is in no room of ROOMS: add it where it belongs")


def test_packages_import_only_their_own_room_and_the_rooms_below():
    upward = []
    for path in own_files():
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name in ("xwp", "xwp.__main__"):
            continue  # the facade and the entry point sit above everything
        here = room_of(name)
        for target in imported_xwp_modules(path):
            module = target if target in KNOWN else target.rsplit(".", 1)[0]  # xwp.errors.XWPError -> xwp.errors
            if module == "xwp" or module not in KNOWN:  # the facade's names (from xwp import XWP)
                continue
            if room_of(module) > here:
                upward.append(f"{name} -> {module}")
    assert not upward, f"imports that point up the rooms: {sorted(upward)}"


def test_top_level_is_small_and_every_module_has_a_room():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    for name in modules():
        if name not in ("xwp", "xwp.__main__"):
            room_of(name)


def test_no_private_name_crosses_a_module():
    """``from xwp.x import _helper`` is refused: a helper used elsewhere is public in a (possibly private) module."""
    crossing = []
    for path in own_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xwp":
                crossing += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in _imported_module_aliases(tree)
            ):
                crossing.append(f"{path.relative_to(ROOT)}: {node.value.id}.{node.attr}")
    assert not crossing, crossing


def _imported_module_aliases(tree: ast.Module) -> set[str]:
    """Names bound to xwp modules in a file (``from xwp.app import safe`` binds ``safe``)."""
    known = set(modules())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xwp":
            names |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in known}
    return names


def test_pages_are_thin():
    """``pages/`` reads the core's vocabulary only: no torch, no Streamlit internals, no private xwp names."""
    for path in sorted((ROOT / "pages").glob("*.py")):
        names = imported_names(ast.parse(path.read_text()))
        assert not any(n.split(".")[0] == "torch" for n in names), path.name
        assert not any(n.startswith("streamlit.runtime") for n in names), path.name


def test_bench_is_a_package_that_imports_without_path_edits():
    """``python -m bench.NAME`` from the root: every script imports, none edits sys.path, none is imported by tests."""
    bench = ROOT / "bench"
    names = sorted(p.stem for p in bench.glob("*.py") if p.stem != "__init__")
    for name in names:
        assert "sys.path" not in (bench / f"{name}.py").read_text(), name
    imports_in_a_fresh_interpreter(names, prefix="bench.")
    for path in (ROOT / "tests").rglob("*.py"):
        names = imported_names(ast.parse(path.read_text()))
        assert all(n.split(".")[0] != "bench" for n in names), f"{path.relative_to(ROOT)} imports the bench"


def _xwp_setting_names(text: str) -> set[str]:
    """``XWP_*`` names in a source text (a family prefix such as ``XWP_COMPUTE_*`` is not a name)."""
    return set(re.findall(r"\bXWP_[A-Z0-9_]*[A-Z0-9]\b", text))


def test_every_xwp_setting_is_declared_in_config_and_documented():
    from xwp.config import SETTINGS

    sources = [*own_files(), *sorted((ROOT / "pages").glob("*.py")), ROOT / "streamlit_app.py"]
    undeclared = {}
    for path in sources:
        names = _xwp_setting_names(path.read_text()) - set(SETTINGS)
        if names:
            undeclared[str(path.relative_to(ROOT))] = sorted(names)
    assert not undeclared, f"XWP_* names not declared in xwp.config.SETTINGS: {undeclared}"
    # the environment is read for them in config.py only (errors.py sits below config and reads its one)
    for path in own_files():
        if path.name in ("config.py", "errors.py"):
            continue
        assert not re.search(r"(environ|getenv)[^\n]*XWP_", path.read_text()), path
    table = (ROOT / "docs" / "settings.md").read_text()
    for s in SETTINGS.values():
        default = s.default if s.default != "" else "(none)"
        assert f"| `{s.name}` | {default} |" in table, f"docs/settings.md lacks {s.name} = {default}"


def test_a_setting_reads_the_environment_and_falls_back_on_nonsense(monkeypatch):
    from xwp.config import setting

    monkeypatch.setenv("XWP_MAX_JOBS", "7")
    assert setting("XWP_MAX_JOBS") == 7
    monkeypatch.setenv("XWP_MAX_JOBS", "seven")
    assert setting("XWP_MAX_JOBS") == 3
    with pytest.raises(KeyError):
        setting("XWP_NOT_DECLARED")


def test_the_router_draws_the_navigation_before_importing_the_core():
    """On a fresh server Streamlit lists pages/ itself until ``st.navigation`` runs: it must run before torch loads."""
    tree = ast.parse((ROOT / "streamlit_app.py").read_text())
    nav_line = min(
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "navigation"
    )
    early = [
        n
        for n in tree.body
        if isinstance(n, ast.Import | ast.ImportFrom) and n.lineno < nav_line
    ]
    modules_before = {a.name for n in early if isinstance(n, ast.Import) for a in n.names}
    modules_before |= {n.module for n in early if isinstance(n, ast.ImportFrom)}
    assert modules_before <= {"streamlit", "xwp.app.routes"}, modules_before
    code = "import sys, xwp, xwp.app.routes; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_facade_keeps_every_public_name_and_train_stays_the_function():
    import importlib
    import types

    import xwp

    for name in xwp.__all__:
        assert getattr(xwp, name) is not None, name
    importlib.import_module("xwp.train")
    assert callable(xwp.train) and not isinstance(xwp.train, types.ModuleType)
    assert isinstance(xwp.models, types.ModuleType)
    with pytest.raises(AttributeError):
        _ = xwp.no_such_name

"""Every st.session_state key is named in xwp/app/keys.py, once, with a comment; no other module defines one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ROOT / "xwp" / "app" / "keys.py"


def key_assignments(path: Path) -> dict[str, tuple[int, object]]:
    """Module-level ``NAME_KEY = "literal"`` (or annotated) assignments of a file: name -> (line, value)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            continue
        for target in targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            for t in names:
                if isinstance(t, ast.Name) and t.id.endswith("_KEY"):
                    found[t.id] = (node.lineno, value.value)
    return found


def sources() -> list[Path]:
    return sorted((ROOT / "xwp" / "app").glob("*.py")) + sorted((ROOT / "pages").glob("*.py"))


def test_only_keys_py_assigns_a_key_constant():
    found = {
        (str(path.relative_to(ROOT)), name): value
        for path in sources()
        if path != KEYS
        for name, (_, value) in key_assignments(path).items()
    }
    elsewhere = sorted(f"{path}: {name}" for path, name in set(found))
    assert not elsewhere, f"session-state keys defined outside xwp/app/keys.py (import them from there): {elsewhere}"


def test_keys_py_names_each_key_once_with_a_comment():
    keys = key_assignments(KEYS)
    assert len(keys) >= 19
    values = [v for _, v in keys.values()]
    assert len(set(values)) == len(values), "two names for one session-state key"
    assert all(v.startswith("xwp_") for v in values), "session keys start with xwp_ (widget keys do not)"
    lines = KEYS.read_text().splitlines()
    uncommented = [name for name, (line, _) in keys.items() if "  # " not in lines[line - 1]]
    assert not uncommented, f"say what each key holds: {uncommented}"


def test_no_literal_xwp_key_indexes_the_session_state():
    """``st.session_state["xwp_..."]`` (or .get/.pop/.setdefault of one) names a key keys.py should hold."""
    literal = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, ast.Subscript):
                key, owner = node.slice, node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                key, owner = node.args[0], node.func.value
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and key.value.startswith("xwp_")
                and isinstance(owner, ast.Attribute)
                and owner.attr == "session_state"
            ):
                literal.append(f"{path.relative_to(ROOT)}:{node.lineno}: {key.value}")
    assert not literal, literal

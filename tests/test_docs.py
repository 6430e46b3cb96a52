"""The README is a guide that names every module; docs and code name no issue numbers; links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300
ISSUE = re.compile(r"\b[Ii]ssues? ?#?\d+|\(#\d+\)")


def guide_files() -> list[Path]:
    """The README and docs/*.md; docs/results/ holds dated run records and is left as written."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_guide_of_at_most_300_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, len(lines)
    text = README.read_text()
    assert 'python -m pytest -q -m "not slow"' in text and "python -m pytest -q" in text  # both test commands


def test_the_code_map_names_every_module_and_bench_script():
    text = README.read_text()
    paths = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "xwp").rglob("*.py"))]
    paths += [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "bench").glob("*.py")) if p.name != "__init__.py"]
    missing = [p for p in paths if f"`{p}`" not in text]
    assert not missing, f"README's code map misses {missing}"


@pytest.mark.parametrize("root", ["xwp", "tests", "bench", "pages"])
def test_code_names_no_issue_numbers(root):
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sorted((ROOT / root).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if ISSUE.search(line) and p.name != "test_docs.py"
    ]
    assert not found, found


def test_the_dated_run_records_name_no_issue_numbers_either():
    records = sorted((ROOT / "docs" / "results").glob("*.md"))
    found = [str(p.relative_to(ROOT)) for p in records if ISSUE.search(p.read_text())]
    assert not found, found


def test_guides_name_no_issue_numbers_and_their_links_resolve():
    for path in guide_files():
        text = path.read_text()
        assert not ISSUE.search(text), f"{path.relative_to(ROOT)}: {ISSUE.search(text).group(0)}"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to a missing {target}"

"""Argument types of the command line (:mod:`xwp.cli`): seeds, counts, method and other names.

Each raises ``argparse.ArgumentTypeError`` or :class:`xwp.XWPError` with a one-line message.
"""

from __future__ import annotations

import argparse

from xwp.errors import XWPError

MAX_SEED = 2**63 - 1


def seed_arg(text: str) -> int:
    """A seed: a whole number in 0..2**63-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed must be a whole number, got {text[:40]!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be in 0..2**63-1, got {text[:40]}")
    return value


def at_least(low: int):
    """An argparse type: a whole number of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


positive_arg = at_least(1)  # a whole number of at least 1
count_arg = at_least(0)  # a whole number of at least 0


def seeds_arg(text: str) -> list[int]:
    """Comma-separated seeds, at least one."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise XWPError("--seeds needs at least one seed, e.g. 0,1,2")
    try:
        return list(dict.fromkeys(seed_arg(p) for p in parts))
    except argparse.ArgumentTypeError as e:
        raise XWPError(f"--seeds: {e}") from None


def methods_arg(text: str) -> list[str]:
    """Comma-separated method names, checked against the registry (each name once)."""
    from xwp.attribution import METHODS

    names = list(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    if text.strip().lower() == "all":
        return list(METHODS)
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise XWPError(
            f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)} or 'all'"
        )
    return names


def names_arg(text: str, known, what: str) -> list[str]:
    """Comma-separated names checked against ``known`` (``what`` names them in the error)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in known]
    if bad or not names:
        raise XWPError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))

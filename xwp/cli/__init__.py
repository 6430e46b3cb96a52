"""The command line: ``python -m xwp train | explain | evaluate | sanity | study``.

The commands are in :mod:`~xwp.cli.commands`, with its argument types in :mod:`~xwp.cli.args`.
"""

from xwp.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]

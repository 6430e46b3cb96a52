"""The one exception type for errors a user can cause, and the one place its messages are made safe."""

from __future__ import annotations

import os
import re

try:
    MAX_MESSAGE_CHARS = max(80, int(os.environ.get("XWP_MAX_MESSAGE_CHARS", 300)))
except ValueError:
    MAX_MESSAGE_CHARS = 300

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def safe_message(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters (control characters become spaces)."""
    line = " ".join(_CONTROL.sub(" ", str(text)).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class XWPError(Exception):
    """A problem with the user's input, files or settings; the message says what to do.

    The message is always one line of at most ``MAX_MESSAGE_CHARS`` (300) characters,
    whatever a caller puts in it, so a hostile file can never fill a browser or a log.
    """

    def __init__(self, message: object = "", *args: object):
        super().__init__(safe_message(message), *args)


class TrainingDiverged(XWPError):
    """The loss became NaN or infinite; the model holds its last good weights."""

    def __init__(self, message: str, history=None):
        super().__init__(message)
        self.history = history

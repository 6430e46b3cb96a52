"""The one exception type for errors a user can cause."""


class XWPError(Exception):
    """A problem with the user's input, files or settings; the message says what to do."""


class TrainingDiverged(XWPError):
    """The loss became NaN or infinite; the model holds its last good weights."""

    def __init__(self, message: str, history=None):
        super().__init__(message)
        self.history = history

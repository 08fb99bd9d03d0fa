"""One error type for everything a user can fix; the CLI prints it without a traceback."""

from __future__ import annotations


class ToolkitError(Exception):
    """A problem the user can act on: `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

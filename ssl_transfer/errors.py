"""Errors the CLI prints as one line, no traceback: problems with the user's input, and runs that diverged."""


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is one line that names what to change."""


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient; ``str(err)`` names the step and the last good checkpoint."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step

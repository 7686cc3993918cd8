"""Errors the CLI prints as one line, no traceback: problems with the user's input, and runs that diverged."""


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is one line that names what to change."""


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient; ``str(err)`` names the step and the last good checkpoint."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class Stopped(Exception):
    """A signal (SIGTERM, SIGINT) stopped training after a step; a resumable checkpoint was written.
    ``str(err)`` says how to resume; ``exit_code`` is 128 + the signal number, as a shell reports a killed job."""

    def __init__(self, message: str, signum: int, step: int) -> None:
        super().__init__(message)
        self.signum, self.step = signum, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

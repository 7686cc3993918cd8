"""Errors caused by the user's input (recipe, paths, data); the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is one line that names what to change."""

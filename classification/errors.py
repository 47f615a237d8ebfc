"""The one exception type users see.

Anything raised as `InputError` is a problem with what the user gave us (a path, a flag, a
file). The CLI prints its message on one line and exits with code 2; everything else is a bug
and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input, with a message that says how to fix it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name: short enough for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

"""The one exception type users see.

Anything raised as `InputError` is a problem with what the user gave us (a path, a flag, a
file). The CLI prints its message on one line and exits with code 2; everything else is a bug
and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input, with a message that says how to fix it."""

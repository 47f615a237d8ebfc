"""The one exception type users see.

Anything raised as `InputError` is a problem with what the user gave us (a path, a flag, a
file). The CLI prints its message on one line and exits with code 2; everything else is a bug
and keeps its traceback.
"""
import reprlib


class InputError(ValueError):
    """Bad user input, with a message that says how to fix it.

    The message is kept to one line: messages quote user data (CSV cells, YAML keys, file names)
    that may hold newlines or other control characters, which are escaped here so that the
    one-line error contract holds whatever the input was.
    """

    def __init__(self, message: object = ""):
        super().__init__(one_line(str(message)))


def one_line(text: str) -> str:
    """`text` with line breaks and other non-printable characters escaped (`\\n`, `\\x00`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name: short enough for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 40, 40, 40


def brief(value: object, limit: int = 60) -> str:
    """A short repr of a value a user gave, for an error message: bounded in depth and items, so
    a huge or deeply nested value is never rendered whole, and cut to `limit` characters."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."

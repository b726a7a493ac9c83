"""The one error type that the CLI turns into a single line on stderr."""


class StylejaxError(ValueError):
    """A user-facing failure: bad input, a missing file, a wrong weight file.

    The message is one line that says what is wrong and, where it helps, what to do. A
    ``ValueError``, so code that validates arguments the usual way catches it too.
    """

"""The one error type of the library, which the CLI turns into a single line on stderr."""


class StylejaxError(ValueError):
    """A user-facing failure: bad input, a missing file, a wrong weight file, a bad shape or dtype.

    A ``ValueError``, so code that guards JAX/numpy input errors catches it too. The message is
    one line that says what is wrong and, where it helps, what to do.
    """

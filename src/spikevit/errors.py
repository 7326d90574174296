"""One exception type for every user-facing problem.

The CLI turns a :class:`SpikevitError` into a one-line message and a non-zero
exit code; library users can catch it.  Raise it with a message that names the
problem (which argument, which shape, which file) and, where possible, the fix.
"""


class SpikevitError(ValueError):
    """A problem with the user's input, files or environment (not a bug)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`SpikevitError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SpikevitError(message)

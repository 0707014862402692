"""The one error type users see.

Anything raised as :class:`SfdaError` is a problem with the user's input or
environment (a missing file, a wrong shape, an unknown name).  The CLI prints
its message on one line and exits with status 2, without a traceback.
"""


class SfdaError(Exception):
    """A user-facing error: the message names the file or option and the fix."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`SfdaError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SfdaError(message)

"""The one error type users see.

Anything raised as :class:`SfdaError` is a problem with the user's input or
environment (a missing file, a wrong shape, an unknown name).  The CLI prints
its message on one line and exits with status 2, without a traceback.
"""


import contextlib
import signal
import threading


class SfdaError(Exception):
    """A user-facing error: the message names the file or option and the fix."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`SfdaError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SfdaError(message)


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that ``finally`` blocks and the atomic writes'
    clean-up run as for Ctrl-C (a BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def on_sigterm():
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""A folder's write lock: one live sfda process writes a folder at a time.

The lock is an advisory ``flock`` on ``FOLDER/.sfda.lock``; the kernel releases it when the
process ends, however it ends (a crash or SIGKILL included), so a stale lock file never blocks a
later run. The file holds the owner's pid, to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from sfda.errors import SfdaError

NAME = ".sfda.lock"


def _flock(fd: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class FolderLock:
    """Hold ``folder``'s lock until :meth:`release`; refuse at once if a live process holds it."""

    def __init__(self, folder: str | os.PathLike, option: str = "--out", wait: float = 0.0):
        """``wait``: seconds to keep trying while another process holds it (job-array tasks claiming
        one folder, each for a moment); 0: refuse at once."""
        self.path = Path(folder) / NAME
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SfdaError(f"{option} {folder}: cannot write there ({exc.strerror}); choose another place") from None
        try:
            _flock(self.fd, wait)
        except OSError:
            owner = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise SfdaError(f"{option} {folder} is being written by another sfda process (pid {owner}); "
                            "wait for it to end, or choose another folder") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        """Remove the lock file (while still holding it) and let go."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

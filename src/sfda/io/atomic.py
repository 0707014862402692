"""Write files so a crash leaves either the old file or the new one, never half of one.

Every output of sfda goes through :func:`atomic_path`: the data is written to a
temporary name in the destination folder (same filesystem, same suffix so that
format-by-extension writers such as nibabel still work), flushed, then renamed
over the destination with :func:`os.replace`, which is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from sfda.errors import SfdaError


def _suffix(path: Path) -> str:
    """The full suffix (``.nii.gz``, not ``.gz``) so writers recognise the format."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temp_name(dest)  # named before it exists, so a signal at any point below can remove it
    try:
        _create(tmp_path)
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp_path, dest)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise SfdaError(f"could not write {dest}: {exc.strerror or exc}; "
                        "free disk space or choose another --out") from exc
    except RuntimeError as exc:
        tmp_path.unlink(missing_ok=True)
        if not _write_failure(exc):
            raise
        raise SfdaError(f"could not write {dest}: the disk is full or refused the write; "
                        "free disk space or choose another --out") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _temp_name(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.{secrets.token_hex(8)}.tmp{_suffix(dest)}"


def _create(tmp_path: Path) -> None:
    """Create the empty temporary file (0600, as mkstemp), refusing one that already exists."""
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_failure(exc: RuntimeError) -> bool:
    """torch.save reports a failed write (a full disk) as a RuntimeError of its zip writer."""
    text = str(exc)
    return "PytorchStreamWriter" in text or "inline_container" in text or "file write failed" in text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)

"""Where a stage may write: never over what it reads, never into another run's folder.

Every stage claims its output before its first write:

- an output that is, contains or lies inside an input (a scan, a label, a checkpoint, a case
  list, a prior table, an nnU-Net folder) is refused;
- a folder that holds another run is refused, unless the run continues itself (``--resume``,
  checked against the run's fingerprint in ``stage.json``: its config and its inputs' content)
  or ``--overwrite`` is given, which empties the folder first;
- a folder holding files sfda did not write is refused (``--overwrite`` does not touch it);
- a folder that another live sfda process writes is refused (:class:`sfda.io.lock.FolderLock`,
  held until the stage ends, released by the kernel if it crashes).

A claim that fails after the folder was made leaves nothing behind. Under torchrun only rank 0
claims: the other ranks write nothing of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from sfda.engine.distributed import is_main
from sfda.errors import SfdaError
from sfda.io.cases import CaseList
from sfda.io.lock import NAME as LOCK, FolderLock
from sfda.stages.common import check_output
from sfda.stages.freshness import RECORD, Stage

#: files any sfda stage leaves in its folder: a folder with one of them (but no ``stage.json``)
#: is a run made before sfda recorded runs
_MARKS = ("config.yaml", "done.json", "last.pt", "log.jsonl", "metrics.json", "results.md", "adapt.jsonl")
#: what ``--nnunet`` imports into a stage's folder before the stage's work (made again from the folder)
IMPORTED_SOURCE = "source.pt"
_IMPORTED = (IMPORTED_SOURCE, f"{Path(IMPORTED_SOURCE).stem}.config.yaml")  # and its config (stages.nnunet.imported)
#: what a resumed run may change: more epochs extend a run
RESUMABLE = ("optim.epochs",)


def case_files(cl: CaseList) -> list[Path]:
    """Every scan and label a case list names."""
    return [Path(p) for c in cl.cases for p in [*c.images.values(), *([c.label] if c.label else [])]]


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def refuse_overlap(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "--out",
                   file: bool = False) -> None:
    """Refuse an output that is an input, holds one (a folder output) or lies inside an input folder."""
    o = _real(out)
    for item in inputs:
        if not item:
            continue
        p = _real(item)
        inside = (not file and o in p.parents) or (p.is_dir() and p in o.parents)
        if p == o or inside:
            what = "is" if p == o else ("holds" if o in p.parents else "lies inside")
            raise SfdaError(f"{option} {out} {what} {item}, which this command reads; sfda never writes over its "
                            "inputs: choose another output")


def folder_kind(folder: Path) -> str:
    """``new`` (missing or empty), ``run`` (has ``stage.json``), ``old`` (sfda's files, no record)
    or ``foreign``."""
    if not folder.is_dir():
        return "new"
    names = {p.name for p in folder.iterdir() if p.name != LOCK}
    if not names:
        return "new"
    if RECORD in names:
        return "run"
    return "old" if names & set(_MARKS) else "foreign"


def _what(folder: Path) -> str:
    record = json.loads((folder / RECORD).read_text()) if (folder / RECORD).exists() else {}
    state = "finished" if (folder / "done.json").exists() else "unfinished"
    return f"a{'n' if state[0] == 'u' else ''} {state} run" + (f" of `sfda {record['command']}`"
                                                                 if record.get("command") else "")


def _check_owner(folder: Path, stage: Stage, resume: bool, overwrite: bool, option: str, resume_flag: str) -> None:
    kind = folder_kind(folder)
    if kind == "foreign":
        some = sorted(p.name for p in folder.iterdir() if p.name != LOCK)[:3]
        raise SfdaError(f"{option} {folder} holds files sfda did not write ({', '.join(some)}); "
                        "choose a new or empty folder")
    if kind == "new":
        return
    if resume and kind == "run":
        record = json.loads((folder / RECORD).read_text())
        other = record.get("command") and stage.command and record["command"] != stage.command
        if other or "config" not in record:  # another command's run (an experiment's folder has no config)
            raise SfdaError(f"{resume_flag}: {folder} holds {_what(folder)}, not one of `sfda {stage.command}`; "
                            f"give another {option}")
        changed = stage.differences(folder, allowed=RESUMABLE)
        if changed:
            raise SfdaError(f"{resume_flag}: {folder} holds a different run ({'; '.join(changed[:4])}); "
                            f"rerun with its settings, or give --overwrite or another {option}")
        return
    if overwrite:
        _empty(folder)
        return
    if resume:
        raise SfdaError(f"{resume_flag}: {folder} holds a run made before sfda recorded runs, so its settings "
                        f"cannot be checked; give --overwrite to replace it, or another {option}")
    raise SfdaError(f"{option} {folder} holds {_what(folder)}; give {resume_flag} to continue it, --overwrite "
                    f"to replace it, or another {option}")


def _empty(folder: Path) -> None:
    """The old run's files go (inputs cannot be inside: :func:`refuse_overlap` came first)."""
    for p in folder.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextlib.contextmanager
def claim_folder(out: str | os.PathLike, stage: Stage, inputs: Iterable[str | os.PathLike], *, resume: bool = False,
                 overwrite: bool = False, option: str = "--out", resume_flag: str = "--resume",
                 share: str = "") -> Iterator[Path]:
    """Own ``out`` for the stage's run: checks above, the lock, ``stage.json``; on success its
    fingerprint is stamped into ``done.json``. ``share`` (``predict --shard I/N``): one of several
    tasks writing one run into ``out`` at once: see :func:`_claim_share`."""
    folder = Path(out)
    if not is_main():
        yield folder
        return
    if share:
        yield from _claim_share(folder, stage, inputs, resume, option, resume_flag, share)
        return
    check_output(folder, option)
    refuse_overlap(folder, inputs, option)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SfdaError(f"{option} {folder}: cannot create it ({exc.strerror}); choose another place") from None
    try:
        lock = FolderLock(folder, option)
    except SfdaError:
        _tidy(folder, created, keep_record=True)
        raise
    started = False
    try:
        _check_owner(folder, stage, resume, overwrite, option, resume_flag)
        stage.start(folder, resume=resume)
        started = True
        yield folder
        stage.finish(folder)
    except BaseException:
        lock.release()
        _tidy(folder, created, keep_record=not started)  # a refusal leaves another run's record alone
        raise
    lock.release()


def _claim_share(folder: Path, stage: Stage, inputs, resume: bool, option: str, resume_flag: str,
                 share: str) -> Iterator[Path]:
    """A share of a run: the folder may hold the same run already (another share's record, the same
    fingerprint: the share is not part of it); the lock is held while claiming only (tasks wait their
    turn a minute at most); the share's end is stamped into ``done.<share>.json``."""
    check_output(folder, option)
    refuse_overlap(folder, inputs, option)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder, option, wait=60.0)
    try:
        if not stage.can_resume(folder):
            _check_owner(folder, stage, resume, False, option, resume_flag)
            stage.start(folder)
    finally:
        lock.release()
    marker = f"done.{share.replace('/', '-of-')}.json"
    (folder / marker).unlink(missing_ok=True)
    yield folder
    stage.finish(folder, marker)


def _tidy(folder: Path, created: bool, keep_record: bool = False) -> None:
    """After a failed run: a folder holding nothing but the run's record, its config and what a stage
    writes before its work (``--nnunet``'s imported ``source.pt``) goes back to how it was, so fixing
    the input and running again needs no --overwrite."""
    names = {p.name for p in folder.iterdir()} - {LOCK}
    if not keep_record and names and names <= {RECORD, "config.yaml", *_IMPORTED}:
        for name in names:
            (folder / name).unlink(missing_ok=True)
        names = set()
    if created and not names:
        with contextlib.suppress(OSError):
            folder.rmdir()


def claim_file(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, overwrite: bool = False,
               option: str = "--out") -> None:
    """A single output file: never an input, never an existing file unless ``overwrite``."""
    check_output(out, option, file=True)
    refuse_overlap(out, inputs, option, file=True)
    if Path(out).exists() and not overwrite:
        raise SfdaError(f"{option} {out} exists; give --overwrite to replace it, or another name")

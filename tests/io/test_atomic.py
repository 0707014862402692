"""atomic_path leaves either the old file or the new one, and no temporary file, whenever it is interrupted."""

import os
import random
import signal

import pytest

from sfda.errors import Terminated
from sfda.io import atomic


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "log.jsonl"
    dest.write_text("old\n")
    atomic.write_text(dest, "new\n")
    assert dest.read_text() == "new\n"
    assert _files(tmp_path) == ["log.jsonl"]


def test_a_signal_just_after_the_temp_is_created_removes_it(tmp_path, monkeypatch):
    """SIGTERM can land between the temp file's creation and the body; the file must still go."""
    create = atomic._create

    def create_then_signal(path):
        create(path)
        assert path.exists()
        raise Terminated()

    monkeypatch.setattr(atomic, "_create", create_then_signal)
    dest = tmp_path / "log.jsonl"
    dest.write_text("old\n")
    with pytest.raises(Terminated):
        atomic.write_text(dest, "new\n")
    assert dest.read_text() == "old\n"
    assert _files(tmp_path) == ["log.jsonl"]


def test_a_signal_in_the_body_removes_the_temp(tmp_path):
    dest = tmp_path / "a.nii.gz"
    with pytest.raises(Terminated):
        with atomic.atomic_path(dest) as tmp:
            assert tmp.name.endswith(".tmp.nii.gz")
            tmp.write_bytes(b"half")
            raise Terminated()
    assert _files(tmp_path) == []


def test_outputs_follow_the_umask_not_0600(tmp_path):
    dest = tmp_path / "x.json"
    previous = os.umask(0o022)
    try:
        atomic.write_json(dest, {"a": 1})
    finally:
        os.umask(previous)
    assert dest.stat().st_mode & 0o777 == 0o644


def test_signals_at_random_moments_never_leave_a_temp(tmp_path):
    """A timer raises Terminated at random points of repeated writes (the CLI's SIGTERM handler does the
    same); whatever point it hits, only the destination may remain."""
    def raise_terminated(signum, frame):
        raise Terminated()

    rng = random.Random(0)
    dest = tmp_path / "log.jsonl"
    previous = signal.signal(signal.SIGALRM, raise_terminated)
    try:
        for _ in range(300):
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(0, 300e-6))
                while True:
                    atomic.write_text(dest, "x\n" * 10)
            except Terminated:
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            assert _files(tmp_path) in (["log.jsonl"], [])
    finally:
        signal.signal(signal.SIGALRM, previous)

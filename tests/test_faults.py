"""Faults end cleanly, runs repeat, and the file to use is named in one place (through main())."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sfda.cli import main

STEPS = ["--batch-size", "4", "optim.max_steps_per_epoch=2"]


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _one_line(err: str) -> str:
    lines = [seg.split("\r")[-1].strip() for seg in err.split("\n")]
    lines = [line for line in lines if line and not line.startswith("epoch ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


@pytest.fixture(scope="module")
def enet_source(tiny_cases, tmp_path_factory) -> Path:
    """A tiny ENet source model (dropout: what made runs differ)."""
    out = tmp_path_factory.mktemp("enet") / "source"
    rc, _, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02",
                       "--epochs", "1", *STEPS, "net=enet", "--out", out])
    assert rc == 0, err
    return out / "selected.pt"


def _digest(path: Path) -> str:
    state = torch.load(path, weights_only=True)["state_dict"]
    return hashlib.sha256(b"".join(v.numpy().tobytes() for _, v in sorted(state.items()))).hexdigest()


@pytest.mark.parametrize("method", ["adabn", "adaent", "tent", "entropy", "adasource", "adversarial"])
def test_an_enet_adaptation_repeats_bit_for_bit(enet_source, tiny_cases, tiny_source, tmp_path, method):
    _, prior = tiny_source
    source = ["--source-modality", "wat", "--source-subjects", "P01"] if method in ("adasource", "adversarial") else []
    digests = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        rc, _, err = _run(["adapt", "--method", method, "--checkpoint", enet_source, "--cases", tiny_cases,
                           "--modality", "inn", "--subjects", "P03", "--prior", prior, "--epochs", "1", *STEPS,
                           *source, "--out", out])
        assert rc == 0, err
        digests.append(_digest(out / "last.pt"))
    assert digests[0] == digests[1]


@pytest.mark.parametrize("method", ["adaent", "tent", "entropy", "adabn"])
def test_predict_adapt_with_enet_repeats_bit_for_bit(enet_source, tiny_cases, tmp_path, method):
    scan = next((Path(tiny_cases).parent / "data").rglob("P03_inn.nii.gz"))
    masks = []
    for k in range(2):
        out = tmp_path / f"pred{k}"
        rc, _, err = _run(["predict", "--checkpoint", enet_source, "--adapt", method, "--steps", "3", scan,
                           "--out", out])
        assert rc == 0, err
        masks.append(hashlib.sha256((out / "P03_inn_seg.nii.gz").read_bytes()).hexdigest())
    assert masks[0] == masks[1]


def test_the_model_to_use_is_named_in_the_last_line_and_done_json(tiny_cases, tiny_source, tmp_path, monkeypatch):
    """A trust fall-back: the last line, done.json and the report all name selected.pt and the decision."""
    import sfda.stages.trust as trust

    checkpoint, prior = tiny_source
    monkeypatch.setattr(trust, "trust_flags", lambda signals, names: [(1, "disc: forced for the test")])
    out = tmp_path / "ada"
    rc, stdout, err = _run(["adapt", "--checkpoint", checkpoint, "--cases", tiny_cases, "--modality", "inn",
                            "--subjects", "P03", "--prior", prior, "--epochs", "1", *STEPS, "--out", out])
    assert rc == 0, err
    assert stdout.strip().splitlines()[-1].startswith(f"model to use: {out}/selected.pt (the trust check's fall-back")
    done = json.loads((out / "done.json").read_text())
    assert done["model"] == "selected.pt" and done["trust"]["fallback"] == "source"
    assert done["trust"]["warnings"] == ["disc: forced for the test"]
    ev = ["evaluate", "--cases", tiny_cases, "--modality", "inn", "--subjects", "P03"]
    assert _run([*ev, "--checkpoint", out / "last.pt", "--out", out / "eval"])[0] == 0
    assert _run(["report", out, "--out", tmp_path / "r1"])[0] == 0
    said = (tmp_path / "r1" / "report.md").read_text()
    assert "Model to use: the source model (fall-back). Its figures above are of last.pt, not of the model" in said
    assert _run([*ev, "--checkpoint", out / "selected.pt", "--out", out / "eval", "--overwrite"])[0] == 0
    assert _run(["report", out, "--out", tmp_path / "r2"])[0] == 0
    assert "Its figures above are of that model." in (tmp_path / "r2" / "report.md").read_text()


def test_a_full_disk_during_training_is_one_line_and_no_temp_file(tiny_cases, tmp_path, monkeypatch):
    import sfda.engine.checkpoint as checkpoint

    real = torch.save
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, f: real(obj, "/dev/full"))  # ENOSPC, as torch meets it
    out = tmp_path / "s"
    rc, _, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01",
                       "--epochs", "1", *STEPS, "net=unet", "net_args={width: 4, depth: 2}", "--out", out])
    assert rc == 2
    line = _one_line(err)
    assert "disk is full" in line and "free disk space" in line
    assert not _leftovers(out)


def test_an_output_under_proc_is_one_line(tiny_cases):
    rc, _, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01",
                       "--out", "/proc/sfda-run"])
    assert rc == 2 and _one_line(err).startswith("sfda: error: ")


def test_ctrl_c_tells_each_command_its_next_step(tiny_cases, tiny_source, tmp_path, monkeypatch):
    import sfda.stages.predict as predict

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "_predict_one", interrupt)
    checkpoint, _ = tiny_source
    scan = next((Path(tiny_cases).parent / "data").rglob("P03_inn.nii.gz"))
    rc, _, err = _run(["predict", "--checkpoint", checkpoint, scan, "--out", tmp_path / "o"])
    assert rc == 130
    assert _one_line(err) == "sfda: predict interrupted; rerun it with --continue to skip the masks already written"
    assert not _leftovers(tmp_path / "o")


def test_predict_continue_skips_the_masks_written(tiny_cases, tiny_source, tmp_path):
    checkpoint, _ = tiny_source
    data = Path(tiny_cases).parent / "data"
    scans = sorted(data.rglob("*_inn.nii.gz"))
    out = tmp_path / "o"
    assert _run(["predict", "--checkpoint", checkpoint, scans[0], "--out", out])[0] == 0
    first = (out / scans[0].name.replace(".nii.gz", "_seg.nii.gz")).stat().st_mtime_ns
    rc, stdout, err = _run(["predict", "--checkpoint", checkpoint, scans[0], "--out", out])
    assert rc == 2 and "--continue" in _one_line(err)
    rc, stdout, err = _run(["predict", "--checkpoint", checkpoint, *scans, "--out", out, "--continue"])
    assert rc == 2 and "inputs" in _one_line(err)  # another list of inputs is another run
    rc, stdout, err = _run(["predict", "--checkpoint", checkpoint, scans[0], "--out", out, "--continue"])
    assert rc == 0 and "wrote 0 masks" in stdout
    assert (out / scans[0].name.replace(".nii.gz", "_seg.nii.gz")).stat().st_mtime_ns == first


def test_sigterm_ends_a_training_with_143_one_line_and_no_temp_file(tiny_cases, tmp_path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "sfda", "train-source", "--cases", tiny_cases, "--modality", "wat",
           "--subjects", "P01,P02", "--epochs", "200", *STEPS, "net=unet", "net_args={width: 4, depth: 2}",
           "keep_epochs=true", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "epoch_002.pt").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert _one_line(err) == "sfda: train-source terminated (SIGTERM); rerun it with --resume to continue"
    assert not _leftovers(out)

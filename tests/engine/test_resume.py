"""Resuming replays the remaining epochs exactly; a crash (SIGKILL) loses nothing; NaN stops cleanly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sfda.config import AdaptConfig, load_config
from sfda.engine import loop
from sfda.engine.checkpoint import load_checkpoint
from sfda.errors import SfdaError
from sfda.methods import Supervised
from sfda.stages.adapt import adapt
from sfda.stages.train import train_source

from conftest import TINY_NET


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs between {a} and {b}"


def _epochs_run(monkeypatch) -> list[int]:
    """Spy on the loop: the epochs actually trained (1-based)."""
    seen: list[int] = []
    real = loop._run_epoch

    def spy(model, method, spec, data, source, opt, epoch, *rest):
        seen.append(epoch + 1)
        return real(model, method, spec, data, source, opt, epoch, *rest)

    monkeypatch.setattr(loop, "_run_epoch", spy)
    return seen


def _stop_before_epoch(monkeypatch, epoch: int) -> None:
    """The loop stops (as if killed) when it reaches ``epoch`` (1-based)."""
    real = loop._run_epoch

    def stop(model, method, spec, data, source, opt, e, *rest):
        if e + 1 == epoch:
            raise KeyboardInterrupt
        return real(model, method, spec, data, source, opt, e, *rest)

    monkeypatch.setattr(loop, "_run_epoch", stop)


#: train-source's nnU-Net-like recipe: its sampling and augmentation draw from the epoch's generator too
RECIPE = ("loss=dice_ce", "oversample_fg=0.5", "spatial.rotate=0.5", "spatial.scale=0.5", "spatial.elastic=0.5",
          "spatial.elastic_spacing=8", "spatial.mirror_axes=[0]", "optim.optimizer=sgd", "optim.lr=0.01",
          "optim.momentum=0.99", "optim.nesterov=true", "optim.schedule=poly")


@pytest.mark.parametrize("recipe", [(), RECIPE], ids=["plain", "recipe"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_train_config, tmp_path, monkeypatch, recipe):
    full = tmp_path / "full"
    recipe = ("keep_epochs=true", *recipe)  # the epochs' weights compared one by one
    train_source(tiny_train_config(full, "optim.epochs=3", *recipe), progress=False)

    part = tmp_path / "part"
    if len(recipe) > 1:  # poly's rates depend on optim.epochs: stop a 3-epoch run after its first epoch instead
        _stop_before_epoch(monkeypatch, 2)
        with pytest.raises(KeyboardInterrupt):
            train_source(tiny_train_config(part, "optim.epochs=3", *recipe), progress=False)
        monkeypatch.undo()
    else:
        train_source(tiny_train_config(part, "optim.epochs=1", *recipe), progress=False)
    _assert_same_weights(full / "epoch_001.pt", part / "last.pt")
    seen = _epochs_run(monkeypatch)
    train_source(tiny_train_config(part, "optim.epochs=3", "resume=true", *recipe), progress=False)
    assert seen == [2, 3]  # epoch 1 was restored, not retrained

    _assert_same_weights(full / "last.pt", part / "last.pt")
    for e in (2, 3):
        _assert_same_weights(full / f"epoch_{e:03d}.pt", part / f"epoch_{e:03d}.pt")
    full_state = load_checkpoint(full / "last.pt")["train_state"]
    part_state = load_checkpoint(part / "last.pt")["train_state"]
    assert part_state["epoch"] == 3
    assert [r["loss"] for r in part_state["log"]] == [r["loss"] for r in full_state["log"]]
    assert len((part / "log.jsonl").read_text().splitlines()) == 3


def test_resume_with_nothing_to_resume_starts_fresh(tiny_train_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_source(tiny_train_config(a, "optim.epochs=2"), progress=False)
    train_source(tiny_train_config(b, "optim.epochs=2", "resume=true"), progress=False)
    _assert_same_weights(a / "last.pt", b / "last.pt")


@pytest.mark.parametrize("method", ["adaent", "adversarial", "adaent+adabn_init"])
def test_adapt_resume_is_bit_identical(tiny_cases, tiny_source, tmp_path, method):
    """Adaptation too (the adversarial discriminator and its optimiser are part of the state; adabn_init's
    re-estimate of the batch-norm statistics runs on the fresh start only: again, it would reset them)."""
    checkpoint, prior = tiny_source
    method, _, init = method.partition("+")

    def cfg(out, *extra):
        src = ["method.source_modality=wat", "method.source_subjects=[P01]"] if method == "adversarial" else []
        src += ["method.adabn_init=true"] if init else []
        return load_config(AdaptConfig, None, [
            f"data.cases={tiny_cases}", "data.modality=inn", "data.subjects=[P03]", f"checkpoint={checkpoint}",
            f"prior={prior}", f"method.name={method}", *src, "optim.batch_size=4",
            "optim.max_steps_per_epoch=2", "optim.lr=1e-3", f"out={out}", *extra])

    adapt(cfg(tmp_path / "full", "optim.epochs=3"), progress=False)
    adapt(cfg(tmp_path / "part", "optim.epochs=1"), progress=False)
    adapt(cfg(tmp_path / "part", "optim.epochs=3", "resume=true"), progress=False)
    _assert_same_weights(tmp_path / "full" / "last.pt", tmp_path / "part" / "last.pt")
    if method == "adversarial":
        da = load_checkpoint(tmp_path / "full" / "last.pt")["train_state"]["method"]["disc"]
        db = load_checkpoint(tmp_path / "part" / "last.pt")["train_state"]["method"]["disc"]
        assert all(torch.equal(da[k], db[k]) for k in da)


def _cli_args(cases: str, out: Path, epochs: int) -> list[str]:
    return ["train-source", "--cases", cases, "--modality", "wat", "--subjects", "P01,P02", "--out", str(out),
            "--epochs", str(epochs), "--batch-size", "4", "--seed", "0", "optim.max_steps_per_epoch=2",
            "keep_epochs=true", *TINY_NET]


def _start_and_kill(cmd: list[str], wait_for: Path) -> None:
    """Run ``cmd``; once ``wait_for`` exists, SIGKILL it after a random extra delay."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not wait_for.exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, f"{wait_for.name} never appeared"
            time.sleep(0.002)
        time.sleep(random.Random().uniform(0.0, 0.08))  # land anywhere in the next epochs, saves included
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _epoch_reached(out: Path) -> int:
    """The epoch of the last complete checkpoint (0 if none survived)."""
    if not (out / "last.pt").exists():
        return 0
    return load_checkpoint(out / "last.pt")["train_state"]["epoch"]


def test_two_sigkills_then_resume_match_uninterrupted_run(tiny_cases, tmp_path):
    from sfda.cli import main

    epochs = 12  # enough epochs that a kill 0-80 ms after the first one still lands mid-run
    reference = tmp_path / "reference"
    assert main(_cli_args(tiny_cases, reference, epochs)) == 0

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sfda", *_cli_args(tiny_cases, out, epochs)]
    _start_and_kill(cmd, out / "epoch_001.pt")
    first = _epoch_reached(out)
    assert not (out / "done.json").exists() and first < epochs - 2, "killed too late: the test proves little"
    # Second kill, during the resumed run. epoch_{first+2} cannot be left over from the first run (it is only
    # written after last.pt holds epoch first+1), so waiting for it means the resumed run really trained.
    _start_and_kill([*cmd, "--resume"], out / f"epoch_{first + 2:03d}.pt")
    second = _epoch_reached(out)
    assert not (out / "done.json").exists(), "the resumed run finished before the second kill"
    # epoch_NNN.pt is saved before last.pt: a kill between the two leaves last.pt one epoch behind
    assert first <= second < epochs
    print(f"killed after epochs {first} and {second}")

    # the last rerun goes through the same command line, in this process (1 thread too) to save a start-up
    assert main([*_cli_args(tiny_cases, out, epochs), "--resume"]) == 0
    assert (out / "done.json").exists()
    assert _epoch_reached(out) == epochs
    _assert_same_weights(reference / "last.pt", out / "last.pt")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, epochs + 1))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_train_config, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    real = Supervised.step
    calls: list = []

    def step(self, model, batch, source=None):
        loss, logits, logs = real(self, model, batch, source)
        calls.append(batch.index.tolist())
        if len(calls) == 3:  # epoch 2, step 1 (2 steps per epoch)
            loss = loss * float("nan")
        return loss, logits, logs

    monkeypatch.setattr(Supervised, "step", step)
    with pytest.raises(SfdaError) as err:
        train_source(tiny_train_config(out, "optim.epochs=3", "keep_epochs=true"), progress=False)
    msg = str(err.value)
    assert "non-finite loss at epoch 2, step 1" in msg and str(out / "last.pt") in msg
    # slice ids of the offending batch: P01 is case 0 and P02 case 1, 8 slices each
    expected = [f"P0{i // 8 + 1}:{i % 8}" for i in calls[-1]]
    assert len(expected) == 4
    for sid in expected:
        assert sid in msg

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["card"].training.epoch == 1 and ckpt["train_state"]["epoch"] == 1
    _assert_same_weights(out / "epoch_001.pt", out / "last.pt")
    assert not (out / "epoch_002.pt").exists() and not (out / "done.json").exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    for w in ckpt["state_dict"].values():
        assert torch.isfinite(w.float()).all()


def test_progress_in_a_log_is_one_line_per_epoch(tiny_train_config, tmp_path, capsys):
    """Not on a terminal (pytest captures): no progress bar, a plain line for every epoch."""
    train_source(tiny_train_config(tmp_path / "run", "optim.epochs=2"), progress=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], captured.out


def test_adabn_init_starts_from_the_target_s_batch_norm_statistics(tiny_cases, tiny_source, tmp_path):
    """``method.adabn_init``: the loop re-estimates the statistics on the target slices before the first
    step; with ``bn: source`` they then stay as they are, so the adapted model holds them exactly."""
    from sfda.engine.checkpoint import load_model
    from sfda.io.cases import load_cases
    from sfda.methods.adabn import reestimate_bn
    from sfda.stages.common import slices_for

    checkpoint, prior = tiny_source
    out = adapt(load_config(AdaptConfig, None, [
        f"data.cases={tiny_cases}", "data.modality=inn", "data.subjects=[P03]", f"checkpoint={checkpoint}",
        f"prior={prior}", "method.adabn_init=true", "method.bn=source", "optim.epochs=1", "optim.batch_size=4",
        "optim.max_steps_per_epoch=2", f"out={tmp_path / 'run'}"]), progress=False)
    source, card = load_model(checkpoint)
    before = {k: v.clone() for k, v in source.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    target = slices_for(load_cases(tiny_cases), ["P03"], "inn", card.slicing, with_labels=False, progress=False)
    reestimate_bn(source.train(), target.images, seed=0)
    adapted = _weights(out / "last.pt")
    assert before and all(torch.equal(adapted[k], source.state_dict()[k]) for k in before)
    assert not all(torch.equal(adapted[k], v) for k, v in before.items())  # they did change

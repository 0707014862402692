"""The adapt stage hands the selected model in memory from the loop to the trust check to the
nnU-Net export: each checkpoint is written once, with its final card, and none of its own is read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sfda.config import AdaptConfig, load_config
from sfda.engine.checkpoint import load_checkpoint
from sfda.stages.adapt import adapt


def _config(cases: str, checkpoint: str, prior: str, out: Path, *extra: str) -> AdaptConfig:
    return load_config(AdaptConfig, None, [
        f"data.cases={cases}", "data.modality=inn", "data.subjects=[P03]", f"checkpoint={checkpoint}",
        f"prior={prior}", "method.name=adaent", "optim.batch_size=4", "optim.max_steps_per_epoch=2",
        "optim.lr=1e-3", f"out={out}", *extra])


def _names(paths: list, folder: Path) -> list[str]:
    return [Path(p).name for p in paths if Path(p).parent == folder]


@pytest.mark.parametrize("fall_back", [False, True], ids=["trusted", "fall-back"])
def test_adapt_writes_selected_pt_once_and_reads_back_none_of_its_files(tiny_cases, tiny_source, tmp_path,
                                                                       monkeypatch, file_traffic, fall_back):
    checkpoint, prior = tiny_source
    if fall_back:
        monkeypatch.setattr("sfda.stages.trust.trust_flags", lambda signals, names: [(1, "disc: forced")])
    writes, reads = file_traffic
    out = tmp_path / "run"
    on_distrust = "source" if fall_back else "keep"  # keep: whatever the tiny model's own signals say
    adapt(_config(tiny_cases, checkpoint, prior, out, "optim.epochs=2", f"on_distrust={on_distrust}"), progress=False)
    written = _names(writes, out)
    assert written.count("selected.pt") == 1 and written.count("last.pt") == 2  # last.pt: once an epoch (resume)
    assert written.count("trust.json") == 1 and written.index("trust.json") < written.index("selected.pt")
    assert reads == [checkpoint]  # the source model, once: the adapted one goes to the trust check in memory
    selected, source = load_checkpoint(out / "selected.pt"), load_checkpoint(checkpoint)
    done = json.loads((out / "done.json").read_text())
    assert list(done) == ["epochs", "final", "selection", "model", "trust", "fingerprint"]
    assert done["trust"]["fallback"] == ("source" if fall_back else None)
    if fall_back:
        assert selected["card"].selection.selected_by == "fallback: source model"
        assert selected["card"].selection.fallback_from == "selected.pt"
        assert all(torch.equal(v, source["state_dict"][k]) for k, v in selected["state_dict"].items())
    else:
        last = load_checkpoint(out / "last.pt")
        assert selected["card"].selection.selected_by == "last"
        assert all(torch.equal(v, last["state_dict"][k]) for k, v in selected["state_dict"].items())


def test_a_finished_adapt_resumed_decides_again_from_its_own_weights(tiny_cases, tiny_source, tmp_path, monkeypatch):
    """No epoch left to train: the restored model is checked again, with the same verdict and file."""
    checkpoint, prior = tiny_source
    monkeypatch.setattr("sfda.stages.trust.trust_flags", lambda signals, names: [(1, "disc: forced")])
    out = tmp_path / "run"
    adapt(_config(tiny_cases, checkpoint, prior, out, "optim.epochs=1"), progress=False)
    first, trust = load_checkpoint(out / "selected.pt"), (out / "trust.json").read_text()
    adapt(_config(tiny_cases, checkpoint, prior, out, "optim.epochs=1", "resume=true"), progress=False)
    again = load_checkpoint(out / "selected.pt")
    assert again["card"].selection == first["card"].selection and (out / "trust.json").read_text() == trust
    assert all(torch.equal(v, first["state_dict"][k]) for k, v in again["state_dict"].items())


def test_a_holdout_selection_writes_the_chosen_epochs_weights_once(tiny_cases, tiny_source, tmp_path, file_traffic):
    """select=holdout_*: the best epoch is kept in memory, not written each time it improves."""
    checkpoint, prior = tiny_source
    writes, _ = file_traffic
    out = tmp_path / "run"
    adapt(_config(tiny_cases, checkpoint, prior, out, "optim.epochs=3", "data.val_subjects=[P02]",
                  "select=holdout_entropy", "keep_epochs=true", "on_distrust=keep"), progress=False)
    assert _names(writes, out).count("selected.pt") == 1
    epoch = json.loads((out / "done.json").read_text())["selection"]["epoch"]
    want, selected = load_checkpoint(out / f"epoch_{epoch:03d}.pt"), load_checkpoint(out / "selected.pt")
    assert selected["card"].selection.selected_by == "holdout_entropy"
    assert all(torch.equal(v, want["state_dict"][k]) for k, v in selected["state_dict"].items())

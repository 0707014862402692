"""Defaults a user expects: ``device: auto``, the slicing axis of the coarsest spacing, and no
per-epoch checkpoints unless asked (``keep_epochs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sfda.config import PriorConfig, load_config
from sfda.data.slices import coarsest_axis
from sfda.engine import distributed
from sfda.engine.checkpoint import load_checkpoint
from sfda.stages.prior import make_prior
from sfda.stages.train import train_source


@pytest.fixture
def fresh_auto(monkeypatch):
    """``auto`` is decided once per process: forget it for this test."""
    monkeypatch.setattr(distributed, "_AUTO", [])


def test_auto_device_is_the_cpu_here_and_says_so_once(fresh_auto, capsys):
    assert not torch.cuda.is_available()
    assert distributed.resolve_device("auto") == "cpu"
    assert distributed.resolve_device("auto") == "cpu"
    assert capsys.readouterr().out.count("device: cpu (auto)") == 1
    assert distributed.check_device("auto") == torch.device("cpu")


def test_auto_device_is_cuda_where_torch_sees_a_gpu(fresh_auto, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.resolve_device("auto") == "cuda"
    assert "device: cuda (auto)" in capsys.readouterr().out
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.device_for("auto") == "cuda:1"  # under torchrun: this rank's own GPU


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1"])
def test_named_devices_pass_through(fresh_auto, name):
    assert distributed.resolve_device(name) == name


def test_a_training_runs_on_the_auto_device_and_records_it(fresh_auto, tiny_train_config, tmp_path, capsys):
    out = tmp_path / "run"
    train_source(tiny_train_config(out), progress=False)
    assert "device: cpu (auto)" in capsys.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["device"] == "cpu"
    assert json.loads((out / "stage.json").read_text())["config"]["device"] == "cpu"  # as before auto existed


@pytest.mark.parametrize("spacings, axis", [
    ([(1, 1, 5)], 2), ([(1.25, 1.25, 7.7), (1.4, 1.4, 8.0)], 2), ([(3, 0.8, 0.8)], 0), ([(0.7, 2.5, 0.7)], 1),
    ([(1, 1, 1)], 0),  # isotropic: the first axis, as before the default was auto
    ([(1, 1, 5), (1, 1, 5), (6, 1, 1)], 2),  # the median per axis, not one odd scan
])
def test_the_coarsest_spacing_picks_the_axis(spacings, axis):
    assert coarsest_axis(spacings)[0] == axis


def _anisotropic(tiny_cases: str, tmp_path: Path) -> str:
    """The tiny phantom's case list with every scan said to be 1 x 1 x 5 mm."""
    cases = json.loads(Path(tiny_cases).read_text())
    for case in cases["cases"]:
        case["spacing"] = [1.0, 1.0, 5.0]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    return str(path)


def test_training_slices_along_the_coarsest_axis_and_the_checkpoint_stores_it(tiny_train_config, tiny_cases,
                                                                              tmp_path, capsys):
    cases = _anisotropic(tiny_cases, tmp_path)
    out = tmp_path / "run"
    train_source(tiny_train_config(out, f"data.cases={cases}"), progress=False)
    assert "slicing axis: 2 (auto" in capsys.readouterr().out
    for name in ("last.pt", "selected.pt"):
        assert load_checkpoint(out / name)["card"].slicing.axis == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["axis"] == 2
    # a set axis wins
    train_source(tiny_train_config(tmp_path / "set", f"data.cases={cases}", "data.axis=0"), progress=False)
    assert load_checkpoint(tmp_path / "set" / "last.pt")["card"].slicing.axis == 0


def test_a_source_prior_takes_the_same_axis(tiny_cases, tmp_path):
    cases = _anisotropic(tiny_cases, tmp_path)
    cfg = load_config(PriorConfig, None, [f"data.cases={cases}", "data.modality=inn", "source_modality=wat",
                                          "source_subjects=[P01,P02]", f"out={tmp_path / 'tau.csv'}"])
    make_prior(cfg, progress=False)
    rows = (tmp_path / "tau.csv").read_text().splitlines()
    assert any(":31," in r for r in rows)  # 32 slices per scan along axis 2 (8 along axis 0)


def test_epoch_files_only_when_asked(tiny_train_config, tmp_path):
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    train_source(tiny_train_config(plain, "optim.epochs=2"), progress=False)
    assert not list(plain.glob("epoch_*.pt"))
    assert {"last.pt", "selected.pt"} <= {p.name for p in plain.iterdir()}
    train_source(tiny_train_config(kept, "optim.epochs=2", "keep_epochs=true"), progress=False)
    assert sorted(p.name for p in kept.glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    for a, b in zip(load_checkpoint(plain / "last.pt")["state_dict"].values(),
                    load_checkpoint(kept / "last.pt")["state_dict"].values()):
        assert torch.equal(a, b)  # the same training either way

"""`sfda train-source` with the whole recipe on (nnU-Net's loss, sampling, augmentation and optimiser)."""

from __future__ import annotations

import json

import pytest

from sfda.cli import main
from sfda.engine.checkpoint import load_model

RECIPE = ["loss=dice_ce", "oversample_fg=0.33", "spatial.rotate=0.5", "spatial.scale=0.5", "spatial.elastic=0.5",
          "spatial.elastic_spacing=8", "spatial.mirror_axes=[0]", "optim.schedule=poly", "optim.optimizer=sgd",
          "optim.lr=0.01", "optim.momentum=0.99", "optim.nesterov=true"]


def test_train_source_runs_with_the_full_recipe(tiny_cases, tmp_path):
    out = tmp_path / "source"
    argv = ["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02", "--out", str(out),
            "--epochs", "1", "--batch-size", "4", "optim.max_steps_per_epoch=2", "net=unet",
            "net_args={width: 4, depth: 2}", *RECIPE]
    assert main(argv) == 0
    (row,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"ce", "soft_dice"} <= set(row) and row["lr"] == pytest.approx(0.01)  # the rate the epoch ran at
    _, card = load_model(out / "last.pt")
    cfg = card.training.config
    assert cfg["loss"] == "dice_ce" and cfg["spatial"]["mirror_axes"] == [0] and cfg["optim"]["nesterov"] is True


def test_nesterov_with_adam_is_refused_before_anything_is_written(tiny_cases, tmp_path, capsys):
    out = tmp_path / "source"
    assert main(["train-source", "--cases", tiny_cases, "--modality", "wat", "--out", str(out),
                 "optim.nesterov=true"]) != 0
    assert "nesterov" in capsys.readouterr().err and not out.exists()

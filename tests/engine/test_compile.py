"""optim.compile=true trains the same network as eager mode and saves plain checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from sfda.engine.checkpoint import load_checkpoint, load_model
from sfda.stages.train import train_source


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_compiled_training_matches_eager(tiny_train_config, tmp_path):
    # The phantom's augmentation draws random numbers per batch: same seed, same draws either way.
    train_source(tiny_train_config(tmp_path / "eager"), progress=False)
    train_source(tiny_train_config(tmp_path / "compiled", "optim.compile=true"), progress=False)
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)
    eager = load_checkpoint(tmp_path / "eager" / "last.pt")["state_dict"]
    compiled = load_checkpoint(tmp_path / "compiled" / "last.pt")["state_dict"]
    assert compiled.keys() == eager.keys()  # no "_orig_mod." prefix: the raw model is saved
    for name in eager:
        assert torch.allclose(compiled[name].float(), eager[name].float(), atol=1e-4), name
    load_model(tmp_path / "compiled" / "last.pt")  # and it loads as any checkpoint

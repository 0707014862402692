"""torchrun with 2 CPU processes (gloo) trains like one process with the same global batch.

Each rank takes half of every global batch and DDP averages the gradients, so the
gradient equals the single-process one up to batch-norm: each rank normalises with
the statistics of its own half batch. The stated tolerance covers that: each epoch's
training loss within 15 % (or 0.01) of one process's, and the validation Dice
averaged over the last 5 epochs within 0.05. With batch-norm statistics frozen
(adaptation with ``method.bn=source``) nothing depends on how the batch is split:
there the two runs agree to float round-off (weights within 1e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_NET

from sfda.cli import main
from sfda.engine.checkpoint import load_checkpoint

LOSS_RTOL, LOSS_ATOL, DICE_ATOL = 0.15, 0.01, 0.05


def _train_args(cases: str, out: Path) -> list[str]:
    return ["train-source", "--cases", cases, "--modality", "wat", "--subjects", "P01,P02", "--val-subjects", "P03",
            "--out", str(out), "--epochs", "40", "--batch-size", "8", "--lr", "0.01", "--seed", "0",
            "augment=false", *TINY_NET]


def _torchrun(args: list[str], tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "sfda", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert res.returncode == 0, res.stderr[-4000:]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _assert_close(single: Path, multi: Path) -> None:
    a, b = _log(single), _log(multi)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    assert a[-1]["val_dice"] > 0.5, "the single-process run learnt too little for the comparison to mean anything"
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=LOSS_RTOL, abs=LOSS_ATOL), (ra["epoch"], ra["loss"],
                                                                                     rb["loss"])
    da, db = (sum(r["val_dice"] for r in x[-5:]) / 5 for x in (a, b))
    assert abs(da - db) <= DICE_ATOL, (da, db)


@pytest.fixture(scope="module")
def two_sources(tiny_cases, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    assert main(_train_args(tiny_cases, tmp / "single")) == 0
    _torchrun(_train_args(tiny_cases, tmp / "ddp"), tmp)
    return tmp


def test_source_training_with_two_gloo_processes_matches_one(two_sources):
    tmp = two_sources
    _assert_close(tmp / "single", tmp / "ddp")
    # Rank 0 alone wrote: one log line per epoch, one checkpoint set, no stray files.
    assert len(_log(tmp / "ddp")) == 40
    assert load_checkpoint(tmp / "ddp" / "last.pt")["train_state"]["epoch"] == 40
    assert not list((tmp / "ddp").glob("*.tmp*"))


def test_adaptation_with_two_gloo_processes_matches_one(two_sources, tiny_cases):
    tmp = two_sources
    prior = tmp / "prior.csv"
    assert main(["prior", "--method", "source-position", "--cases", tiny_cases, "--modality", "inn",
                 "--subjects", "P01,P02,P03", "--source-modality", "wat", "--source-subjects", "P01,P02",
                 "--out", str(prior)]) == 0

    def args(out: Path) -> list[str]:
        return ["adapt", "--method", "adaent", "--cases", tiny_cases, "--modality", "inn", "--subjects", "P01,P02",
                "--val-subjects", "P03", "--checkpoint", str(tmp / "single" / "last.pt"), "--prior", str(prior),
                "--out", str(out), "--epochs", "10", "--batch-size", "8", "--lr", "1e-3", "select=holdout_kl",
                "method.bn=source"]

    assert main(args(tmp / "adapt-single")) == 0
    _torchrun(args(tmp / "adapt-ddp"), tmp)
    a, b = _log(tmp / "adapt-single"), _log(tmp / "adapt-ddp")
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-4)
    assert [r["val_dice"] for r in b] == pytest.approx([r["val_dice"] for r in a], abs=1e-3)
    wa = load_checkpoint(tmp / "adapt-single" / "last.pt")["state_dict"]
    wb = load_checkpoint(tmp / "adapt-ddp" / "last.pt")["state_dict"]
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) < 1e-4
    assert a[0]["loss"] != pytest.approx(a[-1]["loss"], rel=1e-2), "adaptation did not move: the check proves little"
    done = json.loads((tmp / "adapt-ddp" / "done.json").read_text())
    assert done["selection"]["criterion"] == "holdout_kl"


def test_adversarial_refuses_torchrun(tiny_cases, tmp_path, monkeypatch):
    """Its discriminator is not synchronised across processes: refused before anything trains."""
    from sfda.config import MethodConfig, OptimConfig
    from sfda.config.card import ModelCard, Network
    from sfda.engine import distributed as ddp
    from sfda.engine.loop import FitSpec, _check_distributed
    from sfda.errors import SfdaError
    from sfda.methods import build_method

    method = build_method("adversarial", MethodConfig(name="adversarial"))
    card = ModelCard(network=Network("unet"))
    spec = FitSpec(data=None, out=tmp_path, card=card, optim=OptimConfig(batch_size=8))
    with pytest.raises(SfdaError, match="adversarial"):
        _check_distributed(method, spec, ddp.Dist(rank=0, world=2))
    with pytest.raises(SfdaError, match="batch_size"):
        _check_distributed(build_method("adaent", MethodConfig()), FitSpec(data=None, out=tmp_path, card=card,
                                                                           optim=OptimConfig(batch_size=1)), ddp.Dist(rank=0, world=2))

"""``sfda predict`` over several processes: torchrun's ranks and ``--shard I/N`` tasks split the sorted
inputs; every mask is written once, byte for byte the one a single process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_NET

from sfda.cli import main
from sfda.engine.distributed import Dist
from sfda.errors import SfdaError
from sfda.io.cases import load_cases
from sfda.stages.predict import share_of


@pytest.fixture(scope="module")
def source(tiny_cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("shares") / "src"
    assert main(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01", "--epochs", "1",
                 "--batch-size", "4", "augment=false", "--out", str(out), *TINY_NET]) == 0
    return out / "last.pt", [c.images["inn"] for c in load_cases(tiny_cases).cases]


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_seg.nii.gz"))}


def _torchrun(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "sfda", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def test_shares_of_the_sorted_inputs():
    assert share_of("", Dist()) == (0, 1)
    assert share_of("1/3", Dist()) == (1, 3)
    assert share_of("1/3", Dist(rank=1, world=2)) == (4, 6)  # share 1 of 3, split again over two ranks
    for bad in ("3/3", "a/2", "1", "-1/2"):
        with pytest.raises(SfdaError, match="I/N"):
            share_of(bad, Dist())


@pytest.mark.parametrize("extra", [[], ["--adapt", "tent", "--steps", "2"]], ids=["plain", "adapt"])
def test_two_gloo_processes_write_the_masks_of_one(source, tmp_path, extra):
    ckpt, scans = source
    args = ["predict", "--checkpoint", str(ckpt), *scans, *extra]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    said = _torchrun([*args, "--out", str(tmp_path / "two")], tmp_path)
    one, two = _masks(tmp_path / "one"), _masks(tmp_path / "two")
    assert len(one) == len(scans) and one == two  # the same names, byte for byte
    assert said.count("wrote 3 masks") == 1  # one summary line, rank 0's, counting every rank's masks
    assert {"config.yaml", "stage.json", "done.json"} <= {p.name for p in (tmp_path / "two").iterdir()}
    if extra:  # each process keeps its own record of the scans it adapted
        records = [json.loads(line) for f in sorted((tmp_path / "two").glob("adapt.*-of-2.jsonl"))
                   for line in f.read_text().splitlines()]
        assert sorted(r["scan"] for r in records) == sorted(scans)


def test_shard_tasks_fill_one_folder_with_the_masks_of_one_run(source, tmp_path, capsys):
    ckpt, scans = source
    args = ["predict", "--checkpoint", str(ckpt), *scans]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "shards"), "--shard", "1/2"]) == 0
    assert len(_masks(tmp_path / "shards")) == 1  # inputs 1 of the sorted three
    assert main([*args, "--out", str(tmp_path / "shards"), "--shard", "0/2"]) == 0
    assert _masks(tmp_path / "shards") == _masks(tmp_path / "one")
    names = {p.name for p in (tmp_path / "shards").iterdir()}
    assert {"done.0-of-2.json", "done.1-of-2.json", "stage.json"} <= names
    # a task of another run, or one that would empty the folder, is refused
    assert main([*args, "--out", str(tmp_path / "shards"), "--shard", "0/2", "--entropy"]) == 2
    assert "holds" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "shards"), "--shard", "0/2", "--overwrite"]) == 2
    assert "other tasks' masks" in capsys.readouterr().err

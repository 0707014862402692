"""``sfda predict --adapt``: per-scan adaptation, its safety net, and episodic order independence."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sfda.cli import main
from sfda.io.cases import load_cases


@pytest.fixture(scope="module")
def trained(tiny_cases, tmp_path_factory):
    """A tiny source model good enough to find the disc on its own modality (wat)."""
    out = tmp_path_factory.mktemp("tta") / "src"
    assert main(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02", "--net", "unet",
                 "net_args={width: 8, depth: 2}", "optim.epochs=30", "optim.batch_size=4", "optim.lr=0.01",
                 "augment=false", "--out", str(out)]) == 0
    cl = load_cases(tiny_cases)
    return out / "last.pt", {m: [c.images[m] for c in cl.cases] for m in ("wat", "inn")}


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "adapt.jsonl").read_text().splitlines()]


def test_each_scan_is_adapted_then_predicted_in_its_own_geometry(trained, tmp_path):
    ckpt, scans = trained
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(ckpt), *scans["inn"], "--out", str(out), "--adapt", "adaent",
                 "--steps", "4"]) == 0
    records = _records(out)
    assert [r["scan"] for r in records] == scans["inn"]
    for r in records:
        assert r["steps"] == 4 and len(r["losses"]) == 4 and np.isfinite(r["losses"]).all()
        assert r["decision"] == "adapted" and r["warnings"] == [] and r["seconds"] > 0
        assert len(r["fractions"]["prior"]) == 1  # the checkpoint's own position prior, no --prior needed
        mask, image = nib.load(r["mask"]), nib.load(r["scan"])
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)


def test_a_collapsing_adaptation_falls_back_to_the_source_mask_and_says_so(trained, tmp_path, capsys):
    """Entropy alone at a high learning rate empties the mask; the source model's mask is written."""
    ckpt, scans = trained
    plain, adapted = tmp_path / "plain", tmp_path / "collapse"
    assert main(["predict", "--checkpoint", str(ckpt), *scans["inn"], "--out", str(plain)]) == 0
    assert main(["predict", "--checkpoint", str(ckpt), *scans["inn"], "--out", str(adapted), "--adapt", "entropy",
                 "--steps", "20", "--lr", "0.05"]) == 0
    records = _records(adapted)
    fell_back = [r for r in records if r["decision"] == "source (safety net)"]
    assert fell_back, [r["fractions"] for r in records]
    said = capsys.readouterr()
    assert "the source model's mask is written" in said.out + said.err
    for r in fell_back:
        assert any("vanishes" in w or "floods" in w or "atlas" in w for w in r["warnings"])
        name = Path(r["mask"]).name
        assert np.array_equal(np.asarray(nib.load(r["mask"]).dataobj), np.asarray(nib.load(plain / name).dataobj))
        assert np.asarray(nib.load(r["mask"]).dataobj).any()  # never an empty mask where the source found one
    with open(adapted / "volumes.csv") as fh:  # the same decisions and warnings, one row per scan
        rows = {row["mask"]: row for row in csv.DictReader(fh)}
    assert len(rows) == len(records)
    for r in records:
        row = rows[Path(r["mask"]).name]
        assert row["decision"] == r["decision"] and row["warnings"] == "; ".join(r["warnings"])


def test_episodic_masks_do_not_depend_on_the_order_of_the_scans(trained, tmp_path):
    ckpt, scans = trained
    forward, backward = tmp_path / "f", tmp_path / "b"
    for out, order in ((forward, scans["inn"]), (backward, scans["inn"][::-1])):
        assert main(["predict", "--checkpoint", str(ckpt), *order, "--out", str(out), "--adapt", "adaent",
                     "--steps", "3", "--mode", "episodic"]) == 0
    for f in sorted(forward.glob("*_seg.nii.gz")):
        assert np.array_equal(np.asarray(nib.load(f).dataobj), np.asarray(nib.load(backward / f.name).dataobj))
    continual = tmp_path / "c"
    assert main(["predict", "--checkpoint", str(ckpt), *scans["inn"], "--out", str(continual), "--adapt", "adaent",
                 "--steps", "3", "--mode", "continual"]) == 0
    assert [r["mode"] for r in _records(continual)] == ["continual"] * 3


def test_python_api_and_refusals(trained, tmp_path, capsys):
    import sfda

    ckpt, scans = trained
    written = sfda.predict(checkpoint=str(ckpt), inputs=scans["inn"][:1], out=str(tmp_path / "api"), adapt="tent",
                           steps=2, progress=False)
    assert len(written) == 1 and _records(tmp_path / "api")[0]["method"] == "tent"
    table = tmp_path / "tau.csv"
    table.write_text("slice_id,background,foreground\nP01_inn:0,0.9,0.1\n")
    out = tmp_path / "refused"
    assert main(["predict", "--checkpoint", str(ckpt), *scans["inn"], "--out", str(out), "--adapt", "adaent",
                 "--prior", str(table)]) == 2
    assert "has no row" in capsys.readouterr().err and not list(out.glob("*.nii.gz"))
    assert main(["predict", "--checkpoint", str(ckpt), *scans["inn"], "--out", str(out), "--adapt", "adasource"]) == 2
    assert "is not allowed" in capsys.readouterr().err


@pytest.mark.parametrize("on_distrust, classes, expect", [
    ("structure", [], "adapted"), ("structure", [2], "merged"), ("structure", [1, 2], "source"),
    ("source", [2], "source"), ("keep", [2], "adapted")])
def test_the_safety_net_writes_the_source_mask_for_the_distrusted_structures_only(on_distrust, classes, expect):
    """Per-scan decision on a multi-class scan: ``structure`` merges (sfda.nets.merge), ``source`` takes the
    whole source mask, ``keep`` the adapted one; one structure per distrusted class is named."""
    from types import SimpleNamespace

    import torch

    from sfda.nets.merge import StructureMerge
    from sfda.stages.predict_adapt import ScanAdapter

    model, source = torch.nn.Identity(), torch.nn.Identity()
    from sfda.config.card import ModelCard, Network

    adapter = SimpleNamespace(card=ModelCard(network=Network("unet"), labels=("bg", "liver", "kidney")), source=source,
                              cfg=SimpleNamespace(on_distrust=on_distrust))
    written, decision = ScanAdapter.decide(adapter, model, classes)
    if expect == "merged":
        assert isinstance(written, StructureMerge) and written.classes == [2]
        assert written.adapted is model and written.source is source and decision.startswith("source for kidney")
    else:
        assert written is {"adapted": model, "source": source}[expect]
        assert decision.startswith({"adapted": "adapted", "source": "source (safety net)"}[expect])


def test_the_per_scan_adapter_reads_its_config_and_never_writes_it(trained):
    from sfda.config import PredictConfig, config_to_dict
    from sfda.engine.checkpoint import load_model
    from sfda.stages.predict_adapt import ScanAdapter
    from sfda.stages.source import Source

    ckpt, _ = trained
    cfg = PredictConfig(checkpoint=str(ckpt), adapt="tent")
    before = config_to_dict(cfg)
    adapter = ScanAdapter(Source(*load_model(ckpt), str(ckpt)), cfg)
    assert adapter.method.name == "tent" and config_to_dict(cfg) == before

"""``sfda predict``'s files for a person: labels.json and volumes.csv (structure volumes in mL)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sfda.config.card import SourceStats
from sfda.io.volume import write_volume
from sfda.metrics.plausibility import volume_ranges, volumes_ml
from sfda.stages.predict import predict
from sfda.stages.predict_outputs import write_summaries

NAMES = ["background", "liver", "kidney"]


def _rows(out: Path) -> list[dict]:
    with open(out / "volumes.csv") as fh:
        return list(csv.DictReader(fh))


def test_a_cube_of_ten_voxels_at_two_mm_is_eight_ml():
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    assert volumes_ml(mask, (2.0, 2.0, 2.0), 3) == [8.0, 0.0]
    assert volumes_ml(mask.astype(np.float64), (2.0, 2.0, 2.0), 3) == [8.0, 0.0]  # a label file stored as floats


def test_labels_and_volumes_from_the_masks_on_disk(tmp_path):
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1  # 1000 voxels of 8 mm³: 8 mL
    mask[0:5, 0:5, 0:4] = 2  # 100 voxels: 0.8 mL
    scan, seg = tmp_path / "scan.nii.gz", tmp_path / "scan_seg.nii.gz"
    write_volume(seg, mask, np.diag([2.0, 2.0, 2.0, 1.0]))
    (tmp_path / "adapt.jsonl").write_text(json.dumps({"mask": str(seg), "decision": "adapted",
                                                      "warnings": ["a", "b"]}) + "\n")
    write_summaries(tmp_path, [(scan, seg)], NAMES, {scan: ["voxel spacing 9 mm"]}, adapt=True)
    assert json.loads((tmp_path / "labels.json").read_text()) == {"background": 0, "liver": 1, "kidney": 2}
    (row,) = _rows(tmp_path)
    assert row == {"scan": str(scan), "mask": "scan_seg.nii.gz", "liver_ml": "8.000", "kidney_ml": "0.800",
                   "liver_scatter": "0.000", "kidney_scatter": "0.000", "far_from_training": "voxel spacing 9 mm",
                   "scattered": "", "undersized": "", "decision": "adapted", "warnings": "a; b"}


def test_a_scattered_structure_is_warned_about_where_its_labels_are_one_piece(tmp_path, capsys):
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1  # the liver: 1000 voxels in one piece, and 300 apart (3/13 scattered)
    mask[0:3, 0:20, 15:20] = 1
    mask[16:20, 0:5, 0:5], mask[16:20, 15:20, 15:20] = 2, 2  # two kidneys of 100 voxels: half scattered
    scan, seg = tmp_path / "scan.nii.gz", tmp_path / "scan_seg.nii.gz"
    write_volume(seg, mask, np.diag([2.0, 2.0, 2.0, 1.0]))
    write_summaries(tmp_path, [(scan, seg)], NAMES, {}, adapt=False,
                   source=SourceStats(pieces=(0.0, 0.3)))  # kidney: two pieces
    (row,) = _rows(tmp_path)
    assert row["liver_scatter"] == "0.231" and row["kidney_scatter"] == "0.500" and row["scattered"] == "liver"
    said = capsys.readouterr().out
    assert "warning: scan_seg.nii.gz: liver is scattered: 23%" in said and "kidney" not in said
    write_summaries(tmp_path, [(scan, seg)], NAMES, {}, adapt=False)  # no statistic: no warning
    assert _rows(tmp_path)[0]["scattered"] == "" and "scattered" not in capsys.readouterr().out


def test_the_training_volumes_range_over_the_volumes_that_hold_each_structure():
    a, b = np.zeros((10, 10, 10), np.uint8), np.zeros((10, 10, 10), np.uint8)
    a[:5], b[:2], b[9, 9, 9] = 1, 1, 2  # liver 500 and 200 voxels; the kidney only in b
    assert volume_ranges([(a, (1.0, 1.0, 2.0)), (b, (1.0, 1.0, 1.0))], 3) == [[0.2, 1.0], [0.001, 0.001]]
    assert volume_ranges([(a, (1.0, 1.0, 1.0))], 3) == [[0.5, 0.5], None]


def test_a_structure_under_half_its_smallest_training_volume_is_warned_about(tmp_path, capsys):
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1  # the liver: 8 mL
    scan, seg = tmp_path / "scan.nii.gz", tmp_path / "scan_seg.nii.gz"
    write_volume(seg, mask, np.diag([2.0, 2.0, 2.0, 1.0]))
    source = SourceStats(volumes=((20.0, 40.0), (0.5, 2.0)))  # liver at least 20 mL in training
    write_summaries(tmp_path, [(scan, seg)], NAMES, {}, adapt=False, source=source)
    assert _rows(tmp_path)[0]["undersized"] == "liver; kidney"
    said = capsys.readouterr().out
    assert "liver measures 8.0 mL, under half the smallest in the model's training labels (20.0 mL)" in said
    assert "kidney is empty" in said
    source = SourceStats(volumes=((16.0, 40.0), None))  # exactly half: not under it; no kidney in training
    write_summaries(tmp_path, [(scan, seg)], NAMES, {}, adapt=False, source=source)
    assert _rows(tmp_path)[0]["undersized"] == "" and "warning" not in capsys.readouterr().out


@pytest.fixture
def scans(tiny_cases, tmp_path):
    data = Path(tiny_cases).parent / "data"
    own = sorted(data.rglob("*_wat.nii.gz"))
    img = nib.load(own[0])
    far = tmp_path / "far.nii.gz"  # 9 mm voxels: far from the phantom's
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), np.diag([9.0, 9.0, 9.0, 1.0])), far)
    return [*own, far]


def test_predict_writes_one_row_per_scan_even_after_continue(tiny_source, scans, tmp_path):
    checkpoint, _ = tiny_source
    out = tmp_path / "o"
    predict(checkpoint=checkpoint, inputs=[str(s) for s in scans], out=str(out), progress=False)
    assert json.loads((out / "labels.json").read_text()) == {"background": 0, "foreground": 1}
    rows = _rows(out)
    assert [r["scan"] for r in rows] == sorted(str(s) for s in scans)  # in the inputs' sorted order
    far_scan = str(scans[-1])
    for r in rows:
        mask = nib.load(out / r["mask"])
        voxel_ml = float(np.prod(mask.header.get_zooms())) / 1000
        assert float(r["foreground_ml"]) == pytest.approx((np.asarray(mask.dataobj) == 1).sum() * voxel_ml, abs=1e-3)
    assert [bool(r["far_from_training"]) for r in rows] == [r["scan"] == far_scan for r in rows]
    assert "decision" not in rows[0]  # no --adapt: no safety net
    (out / rows[1]["mask"]).unlink()  # a killed run: one mask missing
    written = predict(checkpoint=checkpoint, inputs=[str(s) for s in scans], out=str(out), resume=True,
                      progress=False)
    assert len(written) == 1
    assert _rows(out) == rows  # every scan once, the earlier masks' rows included


def test_entropy_maps_are_nats_up_to_ln_k_in_the_scans_own_grid(tiny_source, scans, tmp_path):
    checkpoint, _ = tiny_source
    out = tmp_path / "e"
    predict(checkpoint=checkpoint, inputs=[str(scans[0])], out=str(out), entropy=True, progress=False)
    entropy = np.asarray(nib.load(next(out.glob("*_entropy.nii.gz"))).dataobj)
    assert entropy.shape == nib.load(scans[0]).shape  # no padding: the scan's own voxels
    assert np.isfinite(entropy).all() and entropy.min() >= 0 and entropy.max() <= np.log(2) + 1e-6
    assert entropy.max() > 0

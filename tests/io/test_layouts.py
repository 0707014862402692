"""Dataset layouts, validation at index time, and the case list (tiny files written here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sfda.errors import SfdaError
from sfda.io.cases import CaseList, check_case_files, load_cases, save_cases, select_cases, subjects
from sfda.io.layouts import LAYOUTS, check_label_array, describe, index_dataset
from sfda.io.volume import write_volume

SHAPE = (8, 12, 10)
AFFINE = np.diag([2.0, 1.25, 1.25, 1.0])


def _img(path: Path, shape=SHAPE, affine=AFFINE, value: float = 100.0) -> Path:
    write_volume(path, np.full(shape, value, np.float32), affine)
    return path


def _lab(path: Path, shape=SHAPE, affine=AFFINE, value: int = 1) -> Path:
    arr = np.zeros(shape, np.uint8)
    arr[2:4, 3:6, 4:6] = value
    write_volume(path, arr, affine)
    return path


def _crops(
    root: Path, subjects_=("A1", "B1"), volumes=(1, 2, 10), mods=("fat", "inn", "opp")
) -> Path:
    for s in subjects_:
        for k in volumes:
            case = f"{s}_volume{k}"
            for m in mods:
                _img(root / "images" / case / f"{s}_small_{m}_volume{k}.nii.gz")
            _lab(root / "labels" / case / f"{s}_small_label_volume{k}.nii.gz")
    return root


def _ivdm(root: Path, subjects_=("A1", "B2"), mods=("fat", "wat")) -> Path:
    for s in subjects_:
        for m in mods:
            _img(root / s / f"{s}_{m}.nii")
        _lab(root / s / f"{s}-Labels.nii.gz")
    return root


def _nnunet(root: Path) -> Path:
    meta = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "disc": 1, "canal": 2},
        "file_ending": ".nii.gz",
        "numTraining": 2,
    }
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in ("spine_001", "spine_002"):
        for ch in (0, 1):
            _img(root / "imagesTr" / f"{case}_{ch:04d}.nii.gz")
        _lab(root / "labelsTr" / f"{case}.nii.gz", value=2)
    return root


# --------------------------------------------------------------------------- layouts


def test_crops_layout_and_auto(tmp_path):
    root = _crops(tmp_path / "crops")
    for layout in ("ivdm3seg-crops", "auto"):
        cl = index_dataset(root, layout)
        assert cl.layout == "ivdm3seg-crops"
        assert cl.modalities == ["fat", "inn", "opp"]
        assert [c.case_id for c in cl.cases] == [
            "A1_volume1",
            "A1_volume2",
            "A1_volume10",
            "B1_volume1",
            "B1_volume2",
            "B1_volume10",
        ]
        assert subjects(cl) == ["A1", "B1"]
    case = cl.cases[0]
    assert case.subject == "A1" and case.shape == SHAPE and case.spacing == (2.0, 1.25, 1.25)
    assert Path(case.images["inn"]).is_absolute()
    assert case.label.endswith("labels/A1_volume1/A1_small_label_volume1.nii.gz")
    assert cl.label_names == ["background", "foreground"]


def test_ivdm3seg_layout_keeps_common_modalities(tmp_path):
    root = _ivdm(tmp_path / "ivdm")
    _img(root / "A1" / "A1_inn.nii.gz")  # only A1 has inn: dropped, not an error
    for layout in ("ivdm3seg", "auto"):
        cl = index_dataset(root, layout)
        assert cl.layout == "ivdm3seg"
        assert cl.modalities == ["fat", "wat"]
        assert [(c.subject, c.case_id) for c in cl.cases] == [("A1", "A1"), ("B2", "B2")]
        assert cl.cases[0].label.endswith("A1/A1-Labels.nii.gz")


def test_nnunet_layout(tmp_path):
    root = _nnunet(tmp_path / "Dataset001_Spine")
    for layout in ("nnunet", "auto"):
        cl = index_dataset(root, layout)
        assert cl.layout == "nnunet"
        assert cl.modalities == ["T2", "ADC"]
        assert cl.label_names == ["background", "disc", "canal"]
        assert [c.case_id for c in cl.cases] == ["spine_001", "spine_002"]
        assert cl.cases[0].images["ADC"].endswith("imagesTr/spine_001_0001.nii.gz")
    assert "2" in describe(cl).splitlines()[1]


def test_pattern_layout(tmp_path):
    root = tmp_path / "custom"
    for s in ("s01", "s02"):
        for m in ("t1", "t2"):
            _img(root / s / f"{s}_{m}.nii.gz")
        _lab(root / s / f"{s}_label.nii.gz")
    (root / "notes.txt").parent.mkdir(exist_ok=True)
    (root / "notes.txt").write_text("ignored")
    cl = index_dataset(
        root,
        "pattern",
        pattern="{subject}/{subject}_{modality}.nii.gz",
        label_pattern="{subject}/{subject}_label.nii.gz",
    )
    assert cl.modalities == ["t1", "t2"]  # the label file is not taken for a modality
    assert [c.subject for c in cl.cases] == ["s01", "s02"]
    assert all(c.label and c.label.endswith(f"{c.subject}_label.nii.gz") for c in cl.cases)
    # auto + --pattern means the pattern layout
    assert (
        index_dataset(
            root,
            pattern="{subject}/{subject}_{modality}.nii.gz",
            label_pattern="{subject}/{subject}_label.nii.gz",
        ).layout
        == "pattern"
    )


def test_pattern_layout_with_case_placeholder(tmp_path):
    root = tmp_path / "p"
    for s, c in (("a", "a-1"), ("a", "a-2"), ("b", "b-1")):
        _img(root / s / c / "mr_T2.nii.gz")
        _lab(root / s / c / "seg.nii.gz")
    cl = index_dataset(
        root,
        "pattern",
        pattern="{subject}/{case}/mr_{modality}.nii.gz",
        label_pattern="{subject}/{case}/seg.nii.gz",
    )
    assert [(c.subject, c.case_id) for c in cl.cases] == [("a", "a-1"), ("a", "a-2"), ("b", "b-1")]
    assert all(c.label for c in cl.cases)


def test_pattern_errors(tmp_path):
    root = _ivdm(tmp_path / "d")
    with pytest.raises(SfdaError, match="needs --pattern"):
        index_dataset(root, "pattern")
    with pytest.raises(SfdaError, match=r"lacks \{modality\}"):
        index_dataset(root, "pattern", pattern="{subject}/x.nii")
    with pytest.raises(SfdaError, match=r"unknown placeholder \{subj\}"):
        index_dataset(root, "pattern", pattern="{subj}/{modality}.nii")


# --------------------------------------------------------------------------- validation


def test_mismatched_shape_names_both_files(tmp_path):
    root = _crops(tmp_path / "c", subjects_=("A1",), volumes=(1,))
    bad = _lab(root / "labels" / "A1_volume1" / "A1_small_label_volume1.nii.gz", shape=(8, 12, 11))
    with pytest.raises(SfdaError) as info:
        index_dataset(root)
    assert str(bad) in str(info.value) and "A1_small_fat_volume1.nii.gz" in str(info.value)


def test_mismatched_spacing_names_both_files(tmp_path):
    root = _ivdm(tmp_path / "d", subjects_=("A1",))
    bad = _img(root / "A1" / "A1_wat.nii", affine=np.diag([2.0, 1.25, 1.3, 1.0]))
    with pytest.raises(SfdaError) as info:
        index_dataset(root, "ivdm3seg")
    assert str(bad) in str(info.value) and "A1_fat.nii" in str(info.value)
    assert "spacing" in str(info.value)


def test_tiny_spacing_difference_is_tolerated(tmp_path):
    root = _ivdm(tmp_path / "d", subjects_=("A1",))
    _img(root / "A1" / "A1_wat.nii", affine=np.diag([2.0, 1.25, 1.2504, 1.0]))
    assert len(index_dataset(root).cases) == 1


def test_modality_missing_in_one_case(tmp_path):
    root = _crops(tmp_path / "c", volumes=(1,))
    (root / "images" / "B1_volume1" / "B1_small_opp_volume1.nii.gz").unlink()
    with pytest.raises(SfdaError, match="case B1_volume1 has no opp image"):
        index_dataset(root)


def test_label_missing_in_one_case(tmp_path):
    root = _crops(tmp_path / "c", volumes=(1,))
    (root / "labels" / "B1_volume1" / "B1_small_label_volume1.nii.gz").unlink()
    with pytest.raises(SfdaError, match="B1_volume1.*no label file"):
        index_dataset(root)


def test_unlabelled_dataset_is_fine(tmp_path):
    root = tmp_path / "u"
    _img(root / "X" / "X_inn.nii.gz")
    cl = index_dataset(root)
    assert cl.cases[0].label is None
    assert "-" in describe(cl).splitlines()[1]


def test_label_value_7(tmp_path):
    root = _ivdm(tmp_path / "d")
    bad = _lab(root / "B2" / "B2-Labels.nii.gz", value=7)
    cl = index_dataset(root)  # headers only: fine
    with pytest.raises(SfdaError) as info:
        describe(cl)
    msg = str(info.value)
    assert str(bad) in msg and "value 7" in msg and "2 classes (background, foreground)" in msg


def test_check_label_array_non_integer():
    with pytest.raises(SfdaError, match=r"lab\.nii contain non-integer value 0\.5"):
        check_label_array(np.array([0.0, 0.5, 1.0]), ["bg", "fg"], "lab.nii")
    assert check_label_array(np.array([[0.0, 1.0]]), ["bg", "fg"], "x") == [0, 1]


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(SfdaError) as info:
        index_dataset(tmp_path, "ivdm3seg-crops")
    assert str(tmp_path) in str(info.value) and "ivdm3seg-crops" in str(info.value)


def test_auto_cannot_detect(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SfdaError, match="--layout pattern --pattern"):
        index_dataset(tmp_path)


def test_unknown_layout_and_missing_root(tmp_path):
    with pytest.raises(SfdaError) as info:
        index_dataset(tmp_path, "bids")
    assert all(name in str(info.value) for name in LAYOUTS)
    with pytest.raises(SfdaError, match="not found"):
        index_dataset(tmp_path / "missing")


def test_describe_table_and_totals(tmp_path):
    cl = index_dataset(_crops(tmp_path / "c"))
    lines = describe(cl).splitlines()
    assert lines[0].split()[0] == "subject"
    assert lines[1].split()[:2] == ["A1", "3"]
    assert "8x12x10" in lines[1] and "2x1.25x1.25" in lines[1] and "0,1" in lines[1]
    assert f"{100 * 12 / 960:.2f}%" in lines[1]
    assert lines[-1] == "6 cases, 2 subjects, modalities: fat, inn, opp"


# --------------------------------------------------------------------------- case list


def test_select_cases(tmp_path):
    cl = index_dataset(_crops(tmp_path / "c"))
    assert [c.case_id for c in select_cases(cl, ["B1"])] == [
        "B1_volume1",
        "B1_volume2",
        "B1_volume10",
    ]
    assert len(select_cases(cl, None, "inn")) == 6
    with pytest.raises(SfdaError) as info:
        select_cases(cl, ["A1", "Z9"])
    assert "Z9" in str(info.value) and "A1, B1" in str(info.value)
    with pytest.raises(SfdaError, match="empty"):
        select_cases(cl, [])
    with pytest.raises(SfdaError, match="wat.*fat, inn, opp"):
        select_cases(cl, ["A1"], "wat")


def test_save_load_round_trip(tmp_path):
    cl = index_dataset(_nnunet(tmp_path / "n"))
    save_cases(tmp_path / "cases.json", cl)
    back = load_cases(tmp_path / "cases.json")
    assert back == cl
    assert isinstance(back.cases[0].spacing, tuple) and isinstance(back.cases[0].shape, tuple)


def test_load_cases_errors(tmp_path):
    with pytest.raises(SfdaError, match="not found.*sfda data index"):
        load_cases(tmp_path / "none.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(SfdaError, match="not an sfda case list"):
        load_cases(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SfdaError, match="not valid JSON"):
        load_cases(tmp_path / "bad.json")
    save_cases(tmp_path / "empty.json", CaseList([], ["t2"]))
    with pytest.raises(SfdaError, match="no cases"):
        load_cases(tmp_path / "empty.json")


def test_check_case_files(tmp_path):
    cl = index_dataset(_ivdm(tmp_path / "d"))
    check_case_files(cl.cases[0])
    Path(cl.cases[0].images["wat"]).unlink()
    with pytest.raises(SfdaError, match="A1_wat.nii.*re-run `sfda data index`"):
        check_case_files(cl.cases[0])


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_ivdm3seg_crops(crops_root):
    cl = index_dataset(crops_root)
    assert cl.layout == "ivdm3seg-crops"
    assert len(cl.cases) == 49
    assert subjects(cl) == ["A1", "B1", "C1", "D1", "E1", "F1"]
    assert cl.modalities == ["fat", "inn", "opp"]
    assert {c.spacing for c in cl.cases} == {(2.0, 1.25, 1.25)}
    assert {c.shape for c in cl.cases} == {(35, 35, 25)}
    assert all(c.label for c in cl.cases)


@pytest.mark.parametrize("names, why", [
    ({"0": "T2", "2": "ADC"}, "must number the channels 0..1"),
    ({"0": "T2", "1": "T2"}, "repeated names"),
    ({"0": "T2+ADC"}, "holds '\\+'"),
])
def test_nnunet_channel_names_are_checked_once_for_indexing_and_import(tmp_path, names, why):
    from sfda.io.layouts.nnunet import nnunet_channels

    with pytest.raises(SfdaError, match=why):
        nnunet_channels({"channel_names": names}, tmp_path / "dataset.json")

"""The synthetic spine phantom: deterministic, labelled, and with a real wat -> inn shift."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from sfda.data.phantom import CONTRAST, make_phantom
from sfda.io.volume import read_volume

SHAPE = (8, 40, 32)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    start = time.perf_counter()
    cl = make_phantom(root, n_subjects=3, seed=0, shape=SHAPE)
    return root, cl, time.perf_counter() - start


def test_layout_and_index(phantom):
    root, cl, seconds = phantom
    assert seconds < 5.0
    assert cl.layout == "ivdm3seg"
    assert [c.subject for c in cl.cases] == ["P01", "P02", "P03"]
    assert cl.modalities == sorted(CONTRAST) == ["inn", "wat"]
    case = cl.cases[0]
    assert case.shape == SHAPE and case.spacing == (2.0, 1.25, 1.25)
    assert case.images["wat"] == str(root / "P01" / "P01_wat.nii.gz")
    assert case.label == str(root / "P01" / "P01-Labels.nii.gz")


def test_same_seed_same_bytes_other_seed_differs(phantom, tmp_path):
    root, _, _ = phantom
    make_phantom(tmp_path / "again", n_subjects=3, seed=0, shape=SHAPE)
    assert _files(tmp_path / "again") == _files(root)
    make_phantom(tmp_path / "other", n_subjects=3, seed=1, shape=SHAPE)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(root).keys()
    assert other["P01/P01_wat.nii.gz"] != _files(root)["P01/P01_wat.nii.gz"]


def test_subject_does_not_depend_on_subject_count(phantom, tmp_path):
    root, _, _ = phantom
    make_phantom(tmp_path / "one", n_subjects=1, seed=0, shape=SHAPE)
    assert _files(tmp_path / "one") == {
        k: v for k, v in _files(root).items() if k.startswith("P01/")
    }


def test_labels_hold_several_discs(phantom):
    _, cl, _ = phantom
    for case in cl.cases:
        label = read_volume(case.label, dtype=None)
        assert label.array.dtype == np.uint8
        assert set(np.unique(label.array)) == {0, 1}
        _, n_discs = ndi.label(label.array)
        assert 3 <= n_discs <= 6
        assert 0.01 < label.array.mean() < 0.2


def _disc_contrast(image: np.ndarray, disc: np.ndarray) -> float:
    """(disc - surrounding ring) / ring, the ring being 2 voxels around the disc."""
    ring = ndi.binary_dilation(disc, iterations=2) & ~disc
    return float(image[disc].mean() / image[ring].mean() - 1.0)


def test_disc_is_bright_in_wat_and_faint_in_inn(phantom):
    _, cl, _ = phantom
    ratios = []
    for case in cl.cases:
        disc = read_volume(case.label).array > 0
        wat = _disc_contrast(read_volume(case.images["wat"]).array, disc)
        inn = _disc_contrast(read_volume(case.images["inn"]).array, disc)
        assert wat > 0.5, f"{case.case_id}: disc should stand out in wat (contrast {wat:.2f})"
        assert abs(inn) < 0.75 * wat, (
            f"{case.case_id}: inn contrast {inn:.2f} should be well below wat {wat:.2f}"
        )
        assert inn > 0.0, f"{case.case_id}: the disc should stay (faintly) visible in inn"
        ratios.append(inn / wat)
    assert np.mean(ratios) < 0.5, f"inn keeps {np.mean(ratios):.2f} of wat's disc contrast on average"


def test_images_look_like_scanner_data(phantom):
    _, cl, _ = phantom
    for m in cl.modalities:
        arr = read_volume(cl.cases[0].images[m]).array
        assert arr.dtype == np.float32 and arr.min() >= 0 and 50 < arr.max() < 1000

"""Exact answers and properties of sfda.metrics (tiny arrays, runs in seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sfda.errors import SfdaError
from sfda.metrics import MetricAccumulator, case_metrics, dice, surface_distances, surface_voxels

EXACT = dict(rel=1e-12, abs=1e-12)


def box(shape, *slices) -> np.ndarray:
    """Boolean array of ``shape`` that is True inside ``slices``."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slices)] = True
    return mask


# ---------------------------------------------------------------- dice

def test_dice_half_overlap_of_two_cubes():
    a = box((8, 8, 8), slice(0, 4), slice(0, 4), slice(0, 4))  # 64 voxels
    b = box((8, 8, 8), slice(2, 6), slice(0, 4), slice(0, 4))  # 64 voxels, 32 shared
    assert dice(a, b) == 2 * 32 / (64 + 64) == 0.5


def test_dice_nested_cubes():
    a = box((6, 6, 6), slice(0, 4), slice(0, 4), slice(0, 4))  # 64
    b = box((6, 6, 6), slice(1, 3), slice(1, 3), slice(1, 3))  # 8, inside a
    assert dice(a, b) == pytest.approx(2 * 8 / (64 + 8))  # 2/9


def test_mask_with_itself_is_perfect():
    a = box((7, 6, 5), slice(1, 5), slice(2, 6), slice(0, 3))
    assert dice(a, a) == 1.0
    assert surface_distances(a, a, (0.5, 2.0, 3.0)) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0}


def test_shape_mismatch_raises():
    with pytest.raises(SfdaError):
        dice(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
    with pytest.raises(SfdaError):
        surface_distances(np.zeros((3, 3, 3), bool), np.zeros((3, 3), bool))
    with pytest.raises(SfdaError):
        case_metrics(np.zeros((3, 3, 3), int), np.zeros((3, 4, 3), int), (1, 1, 1), ["bg", "a"])


def test_spacing_length_must_match_dimension():
    with pytest.raises(SfdaError):
        surface_distances(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 1.0, 1.0))


# ---------------------------------------------------------------- surface distances

def test_surface_counts_array_border_and_uses_6_connectivity():
    full = np.ones((3, 3, 3), dtype=bool)
    surface = surface_voxels(full)
    assert surface.sum() == 26 and not surface[1, 1, 1]  # only the centre is interior
    cube = box((5, 5, 5), slice(1, 4), slice(1, 4), slice(1, 4))
    assert surface_voxels(cube).sum() == 26


def test_single_voxels_offset_along_axis_0():
    a = box((6, 3, 3), slice(1, 2), slice(1, 2), slice(1, 2))
    b = box((6, 3, 3), slice(4, 5), slice(1, 2), slice(1, 2))  # offset (3, 0, 0)
    result = surface_distances(a, b, (2.0, 1.25, 1.25))
    assert result["hd"] == pytest.approx(6.0, **EXACT)
    assert result["hd95"] == pytest.approx(6.0, **EXACT)
    assert result["assd"] == pytest.approx(6.0, **EXACT)


def test_cube_shifted_two_voxels_along_axis_1():
    spacing = (1.5, 0.7, 3.0)
    a = box((10, 12, 10), slice(2, 6), slice(2, 6), slice(2, 6))
    b = box((10, 12, 10), slice(2, 6), slice(4, 8), slice(2, 6))
    assert surface_distances(a, b, spacing)["hd"] == pytest.approx(2 * spacing[1], **EXACT)
    assert surface_distances(b, a, spacing)["hd"] == pytest.approx(2 * spacing[1], **EXACT)


def test_hd95_ignores_one_outlier_but_hd_does_not_2d():
    # truth: a 1-voxel-thick line of 39 voxels; pred: the same line plus one voxel
    # 10 rows away.  pred->truth distances are 39 zeros and one 10; truth->pred all 0.
    truth = box((12, 39), slice(0, 1), slice(0, 39))
    pred = truth.copy()
    pred[10, 0] = True
    result = surface_distances(pred, truth, (1.0, 1.0))
    assert result["hd"] == 10.0
    assert result["hd95"] == 0.0  # 95th percentile of 40 values sits between two zeros
    assert result["assd"] == pytest.approx(10 / (40 + 39), **EXACT)


def test_hd95_linear_interpolation_like_monai():
    # 19-voxel line: the 95th percentile of 19 zeros and one 10 is at rank 18.05,
    # i.e. 0.05 of the way from 0 to 10.
    truth = box((12, 19), slice(0, 1), slice(0, 19))
    pred = truth.copy()
    pred[10, 0] = True
    assert surface_distances(pred, truth, None)["hd95"] == pytest.approx(0.5, rel=1e-9)


def test_both_empty():
    empty = np.zeros((4, 5, 6), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert surface_distances(empty, empty, (1.0, 2.0, 3.0)) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0}


@pytest.mark.parametrize("pred_empty", [True, False])
def test_one_empty_gives_volume_diagonal(pred_empty):
    empty = np.zeros((4, 5, 6), dtype=bool)
    full = box((4, 5, 6), slice(1, 2), slice(1, 3), slice(2, 4))
    pred, truth = (empty, full) if pred_empty else (full, empty)
    diagonal = math.sqrt((4 * 1.0) ** 2 + (5 * 2.0) ** 2 + (6 * 3.0) ** 2)  # sqrt(440)
    assert dice(pred, truth) == 0.0
    result = surface_distances(pred, truth, (1.0, 2.0, 3.0))
    assert result == pytest.approx({"hd": diagonal, "hd95": diagonal, "assd": diagonal}, **EXACT)


# ---------------------------------------------------------------- case metrics and accumulator

def test_case_metrics_three_classes():
    spacing = (1.0, 2.0, 0.5)
    truth = np.zeros((6, 6, 6), dtype=np.int64)
    pred = np.zeros_like(truth)
    truth[0:2] = 1
    pred[0:2] = 1  # class 1: identical
    truth[2:4, 0:3] = 2  # 36 voxels
    pred[2:4] = 2  # 72 voxels, 36 shared -> 2*36/108 = 2/3
    truth[4:6] = 3  # class 3: missed entirely
    rows = case_metrics(pred, truth, spacing, ["background", "a", "b", "c"])
    assert [row["class"] for row in rows] == ["a", "b", "c"]
    assert rows[0] == {"class": "a", "dice": 1.0, "hd_mm": 0.0, "hd95_mm": 0.0, "assd_mm": 0.0}
    assert rows[1]["dice"] == pytest.approx(2 / 3, **EXACT)
    assert rows[1]["hd_mm"] == pytest.approx(3 * 2.0, **EXACT)  # pred row 5 to truth row 2, axis 1
    diagonal = math.sqrt(36 * (1.0 + 4.0 + 0.25))
    assert rows[2]["dice"] == 0.0
    assert rows[2]["hd_mm"] == rows[2]["hd95_mm"] == rows[2]["assd_mm"] == pytest.approx(diagonal)


def test_case_metrics_rejects_label_without_a_name():
    labels = np.full((2, 2, 2), 2, dtype=np.int64)
    with pytest.raises(SfdaError):
        case_metrics(labels, labels, (1, 1, 1), ["background", "a"])


def _two_subjects(spacing_unit: str) -> MetricAccumulator:
    """Subject s1 is perfect; s2 has a cube shifted 2 voxels along axis 0 (dice 0.5)."""
    acc = MetricAccumulator(["background", "disc"], spacing_unit=spacing_unit)
    cube = box((8, 8, 8), slice(0, 4), slice(0, 4), slice(0, 4)).astype(np.int64)
    shifted = box((8, 8, 8), slice(2, 6), slice(0, 4), slice(0, 4)).astype(np.int64)
    acc.add("s1", cube, cube, (2.0, 1.0, 1.0))
    acc.add("s2", shifted, cube, (2.0, 1.0, 1.0))
    return acc


def test_accumulator_summary_mm():
    acc = _two_subjects("mm")
    assert [(r["subject"], r["class"]) for r in acc.rows()] == [("s1", "disc"), ("s2", "disc")]
    summary = acc.summary()
    assert summary["disc"]["dice"] == {"mean": 0.75, "std": 0.25}
    # hd of s2 is 2 voxels * 2.0 mm = 4 mm; s1 is 0 -> mean 2, std 2
    assert summary["disc"]["hd_mm"] == pytest.approx({"mean": 2.0, "std": 2.0}, **EXACT)
    assert set(summary["disc"]) == {"dice", "hd_mm", "hd95_mm", "assd_mm"}


def test_accumulator_voxel_mode_ignores_spacing():
    acc = _two_subjects("voxel")
    summary = acc.summary()
    assert set(summary["disc"]) == {"dice", "hd_vox", "hd95_vox", "assd_vox"}
    assert summary["disc"]["hd_vox"] == pytest.approx({"mean": 1.0, "std": 1.0}, **EXACT)
    assert "hd_mm" not in acc.rows()[0]


def test_single_subject_has_zero_std():
    acc = MetricAccumulator(["background", "disc"])
    cube = box((5, 5, 5), slice(1, 3), slice(1, 3), slice(1, 3)).astype(np.int64)
    acc.add("only", cube, cube, (1, 1, 1))
    assert acc.summary()["disc"]["dice"] == {"mean": 1.0, "std": 0.0}


def test_adding_a_subject_twice_raises():
    acc = MetricAccumulator(["background", "disc"])
    labels = np.zeros((3, 3, 3), dtype=np.int64)
    acc.add("s1", labels, labels, (1, 1, 1))
    with pytest.raises(SfdaError):
        acc.add("s1", labels, labels, (1, 1, 1))


def test_unknown_spacing_unit_raises():
    with pytest.raises(SfdaError):
        MetricAccumulator(["background", "disc"], spacing_unit="cm")


# ---------------------------------------------------------------- properties

@st.composite
def mask_pairs(draw):
    """Two random boolean masks of the same small 3D shape."""
    shape = tuple(draw(st.integers(1, 5)) for _ in range(3))
    return draw(arrays(bool, shape)), draw(arrays(bool, shape))


PROPERTY = settings(max_examples=50, deadline=None)
SPACINGS = st.tuples(*[st.sampled_from([0.5, 1.0, 1.25, 3.0])] * 3)


@PROPERTY
@given(mask_pairs())
def test_dice_bounded_symmetric_and_reflexive(pair):
    a, b = pair
    value = dice(a, b)
    assert 0.0 <= value <= 1.0
    assert value == dice(b, a)
    assert dice(a, a) == 1.0


@PROPERTY
@given(mask_pairs(), SPACINGS)
def test_distances_nonnegative_and_hd_symmetric(pair, spacing):
    a, b = pair
    forward, backward = surface_distances(a, b, spacing), surface_distances(b, a, spacing)
    assert all(v >= 0.0 and math.isfinite(v) for v in forward.values())
    assert forward["hd"] == backward["hd"]
    assert forward["hd95"] <= forward["hd"] + 1e-12 and forward["assd"] <= forward["hd"] + 1e-12


@PROPERTY
@given(mask_pairs(), st.data())
def test_dice_invariant_to_permuting_slices(pair, data):
    a, b = pair
    order = data.draw(st.permutations(range(a.shape[0])))
    assert dice(a[order], b[order]) == dice(a, b)


@PROPERTY
@given(mask_pairs(), SPACINGS)
def test_distances_match_brute_force_over_surface_pairs(pair, spacing):
    """The cropped distance transform gives the same numbers as all pairwise distances."""
    a, b = pair
    if not (a.any() and b.any()):
        return
    pa = np.argwhere(surface_voxels(a)) * np.asarray(spacing)
    pb = np.argwhere(surface_voxels(b)) * np.asarray(spacing)
    pairwise = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    forward, backward = pairwise.min(1), pairwise.min(0)
    result = surface_distances(a, b, spacing)
    assert result["hd"] == pytest.approx(max(forward.max(), backward.max()))
    expected95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assert result["hd95"] == pytest.approx(expected95)
    assert result["assd"] == pytest.approx(np.concatenate([forward, backward]).mean())


def test_sample_std_is_ddof_one_and_zero_for_one_value() -> None:
    from sfda.metrics import sample_std

    assert sample_std([1.0, 2.0, 3.0]) == pytest.approx(1.0)  # sum of squares 2 over n - 1 = 2
    assert sample_std([0.5]) == 0.0

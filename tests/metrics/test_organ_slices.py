"""The second Dice (organ slices only) on a 4-slice volume whose answer is counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.metrics.accumulator import MetricAccumulator
from sfda.metrics.organ_slices import dice_organ_slices, organ_slices


def _volumes():
    """(4, 3, 3), slices along axis 0. Truth: slice 0 empty, organ 1 on slices 1-2, organ 2 on 2-3.
    The prediction adds false positives on slices without the organ (left out by this score)."""
    truth, pred = np.zeros((4, 3, 3), int), np.zeros((4, 3, 3), int)
    truth[1, 0, 0] = truth[1, 0, 1] = truth[2, 0, 0] = 1
    truth[2, 2, 2] = truth[3, 2, 2] = truth[3, 2, 1] = 2
    pred[0, 1, 1] = 1
    pred[0, 0, 0] = 2                                # slice 0 holds no organ: never scored
    pred[1, 0, 0] = pred[2, 0, 0] = pred[2, 1, 0] = 1
    pred[1, 1, 1] = 2                                # slice 1 holds no organ 2: left out for organ 2
    pred[3, 0, 0] = 1                                # slice 3 holds no organ 1: left out for organ 1
    pred[3, 2, 2] = 2
    return pred, truth


def test_known_answer_and_the_full_volume_dice_beside_it():
    pred, truth = _volumes()
    assert organ_slices(truth, 1).tolist() == [1, 2] and organ_slices(truth, 2).tolist() == [2, 3]
    # organ 1 over slices 1-2: truth 3 voxels, prediction 3, overlap 2 -> 4/6; organ 2 over 2-3: 3, 1, 1 -> 2/4
    assert dice_organ_slices(pred, truth, 1) == pytest.approx(2 / 3)
    assert dice_organ_slices(pred, truth, 2) == pytest.approx(1 / 2)
    acc = MetricAccumulator(["background", "a", "b"], spacing_unit="voxel", slice_axis=0)
    rows = acc.add("s", pred, truth, None)
    # the full-volume Dice counts every false positive: organ 1 4/8, organ 2 2/6
    assert [r["dice"] for r in rows] == pytest.approx([1 / 2, 1 / 3])
    assert [r["dice_organ_slices"] for r in rows] == pytest.approx([2 / 3, 1 / 2])
    assert acc.summary()["mean"]["dice_organ_slices"]["mean"] == pytest.approx(7 / 12)


def test_the_slicing_axis_decides_which_slices_are_kept():
    pred, truth = _volumes()
    moved = [np.moveaxis(a, 0, 2) for a in (pred, truth)]
    assert dice_organ_slices(*moved, 1, axis=2) == pytest.approx(2 / 3)
    # along the last axis the slices with organ 1 (columns 0-1) also hold the false positive on slice 0
    assert dice_organ_slices(pred, truth, 1, axis=2) == pytest.approx(4 / 8)
    assert "dice_organ_slices" not in MetricAccumulator(["bg", "a"]).metric_names  # only with an axis

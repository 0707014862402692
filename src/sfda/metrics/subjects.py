"""3D metrics per subject of slice-wise predictions: the slices go back into their volumes
(a subject's crops assembled) before anything is counted."""

from __future__ import annotations

import numpy as np

from sfda.data.sliceset import SliceSet, subject_volumes
from sfda.metrics.accumulator import MetricAccumulator
from sfda.metrics.overlap import dice


def subject_dice(ss: SliceSet, pred: np.ndarray) -> dict[str, float]:
    """Mean foreground-class 3D Dice per subject of labels ``pred`` (N, H, W)."""
    preds = subject_volumes(ss, pred)
    truths = subject_volumes(ss, ss.labels)
    k = ss.num_classes
    return {s: float(np.mean([dice(preds[s] == c, truths[s] == c) for c in range(1, k)])) for s in preds}


def score_subjects(ss: SliceSet, pred: np.ndarray, label_names: list[str]) -> dict:
    """3D metrics per subject (Dice, surface distances in mm, the Dice over organ slices along the
    slicing axis) and their mean ± std."""
    preds = subject_volumes(ss, pred)
    truths = subject_volumes(ss, ss.labels)
    spacing = {c.subject: ss.grid_volume(c)[1] for c in ss.cases}  # the case's own spacing unless resampled
    return score_volumes(preds, truths, spacing, label_names, ss.axis)


def score_volumes(preds: dict, truths: dict, spacing: dict, label_names: list[str],
                  slice_axis: int | None = None) -> dict:
    """3D metrics of one predicted and one true label volume per subject, with its voxel spacing;
    ``slice_axis`` (the slicing axis) adds ``dice_organ_slices`` (:mod:`sfda.metrics.organ_slices`)."""
    acc = MetricAccumulator(label_names, slice_axis=slice_axis)
    for subject in preds:
        acc.add(subject, preds[subject].astype(np.int64), truths[subject].astype(np.int64), spacing[subject])
    return {"per_subject": acc.rows(), "summary": acc.summary()}

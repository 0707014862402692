"""Per-class metrics of labelled volumes, and their mean/std over subjects.

A *subject* is one whole 3D volume: metrics are computed per subject and then
averaged, as in the papers, so callers stack the slices or crops of a subject
before :meth:`MetricAccumulator.add`.  Adding a subject twice is an error because
it would weigh that subject twice in the mean.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from sfda.errors import SfdaError, require
from sfda.metrics.organ_slices import dice_organ_slices
from sfda.metrics.overlap import check_same_shape, dice
from sfda.metrics.surface import normalise_spacing, surface_distances

SPACING_UNITS: tuple[str, ...] = ("mm", "voxel")
#: the second Dice (:mod:`sfda.metrics.organ_slices`), in a row when the slicing axis is known
ORGAN_SLICES = "dice_organ_slices"
_SUFFIX = {"mm": "mm", "voxel": "vox"}


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1), as results tables over seeds show it; 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def metric_names(spacing_unit: str = "mm", slice_axis: int | None = None) -> tuple[str, ...]:
    """Metric keys of a row: ``dice`` then the distances suffixed by their unit, then (with a
    ``slice_axis``) :data:`ORGAN_SLICES`.

    The suffix (``_mm`` or ``_vox``) keeps numbers in different units from being
    mixed up in reports and tables.
    """
    _check_unit(spacing_unit)
    suffix = _SUFFIX[spacing_unit]
    second = () if slice_axis is None else (ORGAN_SLICES,)
    return ("dice", f"hd_{suffix}", f"hd95_{suffix}", f"assd_{suffix}", *second)


def _check_unit(spacing_unit: str) -> None:
    """Refuse unknown units rather than guess."""
    require(
        spacing_unit in SPACING_UNITS,
        f"unknown spacing_unit {spacing_unit!r}; use one of {', '.join(SPACING_UNITS)}",
    )


def _as_labels(labels: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """Return ``labels`` as an integer array, checking every label names a class."""
    array = np.asarray(labels)
    require(
        np.issubdtype(array.dtype, np.integer) or array.dtype == bool,
        f"{name} must hold integer class labels, got dtype {array.dtype}",
    )
    require(array.ndim >= 1, f"{name} must be an array with at least one axis")
    if array.size:
        low, high = int(array.min()), int(array.max())
        require(
            low >= 0 and high < num_classes,
            f"{name} holds labels in [{low}, {high}] but only {num_classes} class names "
            f"were given (labels 0..{num_classes - 1})",
        )
    return array


def case_metrics(
    pred_labels: np.ndarray,
    truth_labels: np.ndarray,
    spacing: Sequence[float] | None,
    class_names: Sequence[str],
    *,
    spacing_unit: str = "mm",
    slice_axis: int | None = None,
) -> list[dict[str, Any]]:
    """One row per foreground class ``k >= 1`` of one subject.

    Each row is ``{"class": class_names[k], "dice", "hd_mm", "hd95_mm", "assd_mm"}``.
    ``class_names[0]`` is the background and gets no row.  With
    ``spacing_unit="voxel"`` the given spacing is ignored, distances are in voxels
    and the keys end in ``_vox``.  Empty classes follow the rule in
    :mod:`sfda.metrics.surface`.  With ``slice_axis`` (the slicing axis, z) each row also has
    :data:`ORGAN_SLICES`, the Dice over the slices holding the class (:mod:`sfda.metrics.organ_slices`).
    """
    _check_unit(spacing_unit)
    require(len(class_names) >= 2, "class_names needs the background and at least one class")
    pred = _as_labels(pred_labels, "prediction labels", len(class_names))
    truth = _as_labels(truth_labels, "ground-truth labels", len(class_names))
    check_same_shape(pred, truth)
    sampling = None if spacing_unit == "voxel" else normalise_spacing(spacing, pred.ndim)
    keys = metric_names(spacing_unit, slice_axis)
    rows = []
    for k in range(1, len(class_names)):
        p, t = pred == k, truth == k
        distances = surface_distances(p, t, sampling)
        values = (dice(p, t), distances["hd"], distances["hd95"], distances["assd"])
        if slice_axis is not None:
            values += (dice_organ_slices(pred, truth, k, slice_axis),)
        rows.append({"class": class_names[k], **dict(zip(keys, values))})
    return rows


#: the summary's entry for the mean over structures (only with more than one structure)
MEAN_KEY = "mean"


def headline(summary: dict, metric: str = "dice") -> dict[str, float] | None:
    """A summary's one ``{"mean", "std"}`` for ``metric``: the mean over structures when there are
    several (:data:`MEAN_KEY`), else the one structure's; None for an empty summary."""
    if MEAN_KEY in summary:
        return summary[MEAN_KEY][metric]
    fg = [v[metric] for k, v in summary.items() if k != "background"]
    return fg[0] if fg else None


class MetricAccumulator:
    """Collects per-subject, per-class metrics and summarises them over subjects."""

    def __init__(self, class_names: Sequence[str], spacing_unit: str = "mm", slice_axis: int | None = None) -> None:
        """``class_names[0]`` is the background; ``spacing_unit`` is "mm" or "voxel"; ``slice_axis``:
        the volumes' slicing axis, which adds :data:`ORGAN_SLICES` (see :func:`case_metrics`)."""
        _check_unit(spacing_unit)
        require(len(class_names) >= 2, "class_names needs the background and at least one class")
        self.class_names = list(class_names)
        self.spacing_unit = spacing_unit
        self.slice_axis = slice_axis
        self.metric_names = metric_names(spacing_unit, slice_axis)
        self._rows: list[dict[str, Any]] = []
        self._subjects: set[str] = set()

    def add(
        self,
        subject: str,
        pred_labels: np.ndarray,
        truth_labels: np.ndarray,
        spacing: Sequence[float] | None,
    ) -> list[dict[str, Any]]:
        """Compute and store the rows of one subject (its whole volume); return them.

        Raises :class:`SfdaError` if ``subject`` was already added.
        """
        if subject in self._subjects:
            raise SfdaError(
                f"subject {subject!r} was added twice; a subject is one whole volume, "
                "so stack its slices or crops before adding"
            )
        rows = case_metrics(
            pred_labels, truth_labels, spacing, self.class_names, spacing_unit=self.spacing_unit,
            slice_axis=self.slice_axis,
        )
        rows = [{"subject": subject, **row} for row in rows]
        self._subjects.add(subject)
        self._rows.extend(rows)
        return [dict(row) for row in rows]

    def rows(self) -> list[dict[str, Any]]:
        """All rows so far, in the order added (copies, safe to modify)."""
        return [dict(row) for row in self._rows]

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{class: {metric: {"mean", "std"}}}`` over subjects (population std, ddof=0), plus
        ``"mean"`` (:data:`MEAN_KEY`): the mean over structures, when there are several.

        Empty until a subject is added.
        """
        result: dict[str, dict[str, dict[str, float]]] = {}
        for name in self.class_names[1:]:
            class_rows = [row for row in self._rows if row["class"] == name]
            if class_rows:
                result[name] = {
                    m: _mean_std([row[m] for row in class_rows]) for m in self.metric_names
                }
        if len(self.class_names) > 2 and self._rows:
            result[MEAN_KEY] = self._mean_over_structures()
        return result

    def _mean_over_structures(self) -> dict[str, dict[str, float]]:
        """Per subject the mean over its structures, then mean and std over subjects."""
        by_subject: dict[str, list[dict]] = {}
        for row in self._rows:
            by_subject.setdefault(row["subject"], []).append(row)
        return {m: _mean_std([np.mean([r[m] for r in rows]) for rows in by_subject.values()])
                for m in self.metric_names}

    def __len__(self) -> int:
        """Number of subjects added."""
        return len(self._subjects)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and population standard deviation (a single value has std 0)."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=0))}

"""Label checks and the per-subject summary table of ``sfda data describe``."""

from __future__ import annotations

import os

import numpy as np

from sfda.errors import SfdaError
from sfda.io.cases import CaseList
from sfda.io.layouts.common import _fmt_spacing
from sfda.io.volume import read_volume


def check_label_array(
    array: np.ndarray, label_names: list[str], path: str | os.PathLike
) -> list[int]:
    """Raise SfdaError unless ``array`` holds integer class indices < len(label_names).

    Returns the sorted label values found.
    """
    arr = np.asarray(array)
    n = len(label_names)
    declared = f"the case list declares {n} classes ({', '.join(label_names)})"
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise SfdaError(f"labels in {path} contain NaN/inf values; fix the label file")
    if arr.dtype.kind not in "biuf":
        raise SfdaError(
            f"labels in {path} have type {arr.dtype}, not integer class indices; fix the label file"
        )
    values = np.unique(arr)
    if arr.dtype.kind == "f":
        frac = values[values != np.round(values)]
        if frac.size:
            raise SfdaError(
                f"labels in {path} contain non-integer value {float(frac[0]):g}; labels must be "
                "class "
                f"indices 0..{n - 1} ({', '.join(label_names)}): fix the label file "
                "(resample labels with nearest-neighbour interpolation)"
            )
    bad = values[(values < 0) | (values >= n)]
    if bad.size:
        raise SfdaError(
            f"labels in {path} contain value {int(bad[-1]) if bad[-1] >= n else int(bad[0])} but "
            f"{declared}: "
            "fix the label file or the label names"
        )
    return [int(v) for v in values]


def describe(case_list: CaseList) -> str:
    """A plain-text per-subject table plus a totals line (reads the label files)."""
    header = ["subject", "cases", "modalities", "shapes", "spacing (mm)", "labels", "foreground"]
    rows = [header] + [
        _subject_row(case_list, s) for s in dict.fromkeys(c.subject for c in case_list.cases)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    n_subjects = len(rows) - 1
    lines.append(
        f"{len(case_list.cases)} cases, {n_subjects} subjects, modalities: "
        f"{', '.join(case_list.modalities)}"
    )
    return "\n".join(lines)


def _subject_row(case_list: CaseList, subject: str) -> list[str]:
    cases = [c for c in case_list.cases if c.subject == subject]
    shapes = list(dict.fromkeys("x".join(map(str, c.shape)) for c in cases))
    spacings = list(dict.fromkeys(_fmt_spacing(c.spacing) for c in cases))
    values: set[int] = set()
    fg = total = 0
    for c in cases:
        if c.label is None:
            continue
        arr = read_volume(c.label, dtype=None, check_finite=False).array
        values.update(check_label_array(arr, case_list.label_names, c.label))
        fg += int(np.count_nonzero(arr))
        total += arr.size
    return [
        subject,
        str(len(cases)),
        ",".join(case_list.modalities),
        _join_few(shapes),
        _join_few(spacings),
        ",".join(map(str, sorted(values))) if total else "-",
        f"{100.0 * fg / total:.2f}%" if total else "-",
    ]


def _join_few(items: list[str], limit: int = 3) -> str:
    return (
        ", ".join(items)
        if len(items) <= limit
        else ", ".join(items[:limit]) + f" (+{len(items) - limit} more)"
    )

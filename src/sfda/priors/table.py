"""The prior table: one row of class ratios τe per target slice.

CSV with a header ``slice_id,<class 0>,<class 1>,...``; slice ids are
``<case_id>:<index along the slicing axis>`` as in :class:`sfda.data.sliceset.SliceSet`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from sfda.errors import SfdaError
from sfda.io.atomic import write_text


def save_prior(path: str | Path, slice_ids: list[str], ratios: np.ndarray, class_names: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["slice_id", *class_names])
    for sid, row in zip(slice_ids, ratios):
        writer.writerow([sid, *(f"{float(v):.6f}" for v in row)])
    write_text(path, buf.getvalue())


#: a row of class fractions may miss summing to one by this much (a table's printed decimals)
SUM_TOLERANCE = 1e-3


def fraction_rows(ratios) -> np.ndarray:
    """Per row of ``ratios`` (..., K): whether it holds K non-negative class fractions summing to one."""
    ratios = np.asarray(ratios, dtype=np.float64)
    return (np.abs(ratios.sum(axis=-1) - 1) <= SUM_TOLERANCE) & (ratios >= 0).all(axis=-1)


def require_prior(path: str | Path) -> Path:
    """``path`` if it is a file; else the refusal that says how to make one."""
    p = Path(path)
    if not p.is_file():
        raise SfdaError(f"prior table {p} not found; create it with `sfda prior`")
    return p


def load_priors(path: str | Path | None, slice_ids: list[str], val_ids: list[str] | None,
                num_classes: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The prior of the target slices ``slice_ids`` and of the held-out slices ``val_ids`` (None when the
    table does not cover them: the held-out scores are then off), from the table at ``path``; (None, None)
    without a table."""
    if not path:
        return None, None
    prior = load_prior(path, slice_ids, num_classes)
    if not val_ids:
        return prior, None
    try:
        return prior, load_prior(path, val_ids, num_classes)
    except SfdaError:
        return prior, None


def load_prior(path: str | Path, slice_ids: list[str], num_classes: int) -> np.ndarray:
    """Ratios (N, K) aligned with ``slice_ids``; refuses missing slices or rows not summing to one."""
    p = require_prior(path)
    try:
        rows = list(csv.reader(p.read_text().splitlines()))
        table = {r[0]: np.array([float(v) for v in r[1:]], dtype=np.float32) for r in rows[1:] if r}
    except (ValueError, IndexError):
        raise SfdaError(f"prior table {p} is not a CSV of slice_id and {num_classes} ratios; "
                        "recreate it with `sfda prior`") from None
    missing = [s for s in slice_ids if s not in table]
    if missing:
        wanted, held = (s.endswith(":volume") for s in (missing[0], next(iter(table), "")))
        hint = ("" if wanted == held else " (the model takes whole volumes, the table has a row per slice)"
                if wanted else " (the model takes slices, the table has a row per volume)")
        raise SfdaError(f"prior table {p} has no row for {len(missing)} target slices (e.g. {missing[0]}{hint}); "
                        "recreate it with `sfda prior` for the same cases, modality and subjects, given the model "
                        "(--checkpoint) so that its rows are the model's samples")
    ratios = np.stack([table[s] for s in slice_ids])
    if ratios.shape[1] != num_classes:
        raise SfdaError(f"prior table {p} has {ratios.shape[1]} classes but the model has {num_classes}")
    bad = ~fraction_rows(ratios)
    if bad.any():
        sid = slice_ids[int(np.argmax(bad))]
        raise SfdaError(f"prior table {p}: ratios of {sid} do not sum to one (or are negative); "
                        "each row must be class fractions")
    return ratios

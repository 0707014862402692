"""Index a dataset folder: run its layout's finder, then check every case from headers alone."""

from __future__ import annotations

import os
from pathlib import Path

from sfda.errors import SfdaError
from sfda.io.cases import DEFAULT_LABEL_NAMES, Case, CaseList
from sfda.io.layouts.common import SPACING_TOL_MM, _Entry, _fmt_spacing, _Found, _natural_key
from sfda.io.layouts.registry import LAYOUTS, detect_layout, layout_names
from sfda.io.volume import read_header


def index_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    pattern: str | None = None,
    label_pattern: str | None = None,
) -> CaseList:
    """Find and validate every case under ``root`` (headers only, no voxel data)."""
    root_path = Path(os.path.abspath(root))
    if not root_path.is_dir():
        raise SfdaError(f"dataset folder {root_path} not found; check the path")
    name = _choose_layout(root_path, layout, pattern)
    spec = LAYOUTS[name]
    found = spec.find(root_path, pattern, label_pattern)
    if not found.entries:
        raise SfdaError(
            f"no cases found in {root_path} for layout {name!r} (expected {spec.expects}); "
            "check the folder or choose another --layout"
        )
    entries = sorted(
        found.entries, key=lambda e: (_natural_key(e.subject), _natural_key(e.case_id))
    )
    modalities = _modalities(entries, found, root_path)
    _check_unique_ids(entries)
    _check_labels_all_or_none(entries)
    cases = [_validated_case(e, modalities) for e in entries]
    return CaseList(
        cases, modalities, list(found.label_names or DEFAULT_LABEL_NAMES), name, str(root_path)
    )


def _choose_layout(root: Path, layout: str, pattern: str | None) -> str:
    if layout not in layout_names():
        raise SfdaError(
            f"unknown layout {layout!r}; choose --layout from {', '.join(layout_names())}"
        )
    if layout == "auto":
        return "pattern" if pattern else detect_layout(root)
    if pattern and layout != "pattern":
        raise SfdaError(
            f"--pattern only applies to --layout pattern, not {layout!r}; drop --pattern or use "
            "--layout pattern"
        )
    return layout


def _modalities(entries: list[_Entry], found: _Found, root: Path) -> list[str]:
    """Modalities every case has; a modality missing from some case is an error (or dropped)."""
    every = set.intersection(*(set(e.images) for e in entries))
    union = set().union(*(e.images for e in entries))
    if found.common_modalities_only:
        if not every:
            raise SfdaError(
                f"no modality is present in every case under {root}; add the missing images"
            )
        for e in entries:
            e.images = {m: p for m, p in e.images.items() if m in every}
    else:
        for e in entries:
            missing = sorted(union - set(e.images))
            if missing:
                example = next(x for x in entries if missing[0] in x.images)
                raise SfdaError(
                    f"case {e.case_id} has no {', '.join(missing)} image (other cases do, e.g. "
                    f"{example.images[missing[0]]}); add the file or remove the case"
                )
    order = found.modality_order or sorted(every, key=_natural_key)
    return [m for m in order if m in every]


def _check_unique_ids(entries: list[_Entry]) -> None:
    seen: dict[str, _Entry] = {}
    for e in entries:
        if e.case_id in seen:
            raise SfdaError(
                f"case id {e.case_id} appears twice ({next(iter(e.images.values()))} and "
                f"{next(iter(seen[e.case_id].images.values()))}); rename one"
            )
        seen[e.case_id] = e


def _check_labels_all_or_none(entries: list[_Entry]) -> None:
    """Unlabelled target data is fine; a dataset where a few labels are missing is a mistake."""
    labelled = [e for e in entries if e.label is not None]
    if labelled and len(labelled) != len(entries):
        e = next(x for x in entries if x.label is None)
        raise SfdaError(
            f"case {e.case_id} ({next(iter(e.images.values()))}) has no label file while "
            f"{len(labelled)} other cases do (e.g. {labelled[0].label}); add its label or remove "
            "the case"
        )


def _validated_case(e: _Entry, modalities: list[str]) -> Case:
    """Same shape and spacing (within 1e-3 mm) for every image and the label of one case."""
    files = [e.images[m] for m in modalities] + ([e.label] if e.label else [])
    ref = files[0]
    shape, spacing = read_header(ref)
    for other in files[1:]:
        o_shape, o_spacing = read_header(other)
        if o_shape != shape or max(abs(a - b) for a, b in zip(o_spacing, spacing)) > SPACING_TOL_MM:
            raise SfdaError(
                f"{other} has shape {o_shape} and spacing {_fmt_spacing(o_spacing)} but {ref} has "
                "shape "
                f"{shape} and spacing {_fmt_spacing(spacing)}; images and label of case "
                f"{e.case_id} "
                "must share one voxel grid: resample them"
            )
    return Case(
        subject=e.subject,
        case_id=e.case_id,
        images={m: str(e.images[m]) for m in modalities},
        label=str(e.label) if e.label else None,
        spacing=spacing,
        shape=shape,
    )

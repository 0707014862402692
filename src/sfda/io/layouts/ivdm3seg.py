"""The IVDM3Seg layouts: one folder per scan (``ivdm3seg``) and the cropped images/labels tree."""

from __future__ import annotations

import re
from pathlib import Path

from sfda.errors import SfdaError
from sfda.io.layouts.common import _Entry, _entry, _first_existing, _Found

_CROP_IMAGE = re.compile(
    r"(?P<subject>.+)_small_(?P<modality>[A-Za-z0-9]+)_volume(?P<k>\d+)\.nii(\.gz)?"
)


def _find_crops(root: Path, pattern: str | None, label_pattern: str | None) -> _Found:
    """images/<S>_volume<k>/<S>_small_<mod>_volume<k>.nii.gz and
    labels/<S>_volume<k>/<S>_small_label_volume<k>.nii.gz."""
    entries: dict[str, _Entry] = {}
    for f in sorted((root / "images").glob("*/*")):
        m = _CROP_IMAGE.fullmatch(f.name)
        if not m or m["modality"] == "label":
            continue
        case_id = f"{m['subject']}_volume{m['k']}"
        if f.parent.name != case_id:
            raise SfdaError(
                f"{f} is in folder {f.parent.name}, expected {case_id}; move it into "
                f"images/{case_id}/"
            )
        _entry(entries, m["subject"], case_id).add_image(m["modality"], f)
    for case_id, e in entries.items():
        stem = (
            root
            / "labels"
            / case_id
            / f"{e.subject}_small_label_volume{case_id.rsplit('volume', 1)[1]}"
        )
        e.label = _first_existing(
            stem.with_name(stem.name + ".nii.gz"), stem.with_name(stem.name + ".nii")
        )
    return _Found(list(entries.values()))


def _find_ivdm3seg(root: Path, pattern: str | None, label_pattern: str | None) -> _Found:
    """One folder per scan <S>/ with <S>_<mod>.nii[.gz] and <S>-Labels.nii[.gz]."""
    entries: list[_Entry] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        s = folder.name
        image_re = re.compile(re.escape(s) + r"_(?P<modality>[A-Za-z0-9]+)\.nii(\.gz)?")
        e = _Entry(s, s)
        for f in sorted(folder.iterdir()):
            m = image_re.fullmatch(f.name)
            if m and f.is_file():
                e.add_image(m["modality"], f)
        if e.images:
            e.label = _first_existing(folder / f"{s}-Labels.nii", folder / f"{s}-Labels.nii.gz")
            entries.append(e)
    return _Found(entries, common_modalities_only=True)

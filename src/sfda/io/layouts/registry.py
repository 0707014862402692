"""The registry of named layouts and ``--layout auto`` detection."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sfda.errors import SfdaError
from sfda.io.layouts.common import EXAMPLE_PATTERN, Layout
from sfda.io.layouts.ivdm3seg import _find_crops, _find_ivdm3seg
from sfda.io.layouts.nnunet import _find_nnunet
from sfda.io.layouts.pattern import _find_pattern

LAYOUTS: dict[str, Layout] = {
    "ivdm3seg-crops": Layout(
        "ivdm3seg-crops",
        _find_crops,
        "images/<S>_volume<k>/<S>_small_<modality>_volume<k>.nii.gz and "
        "labels/<S>_volume<k>/<S>_small_label_volume<k>.nii.gz",
    ),
    "ivdm3seg": Layout(
        "ivdm3seg", _find_ivdm3seg, "<S>/<S>_<modality>.nii[.gz] and <S>/<S>-Labels.nii[.gz]"
    ),
    "nnunet": Layout(
        "nnunet",
        _find_nnunet,
        "dataset.json, imagesTr/<case>_<XXXX><ending>, labelsTr/<case><ending>",
    ),
    "pattern": Layout("pattern", _find_pattern, "files matching --pattern"),
}


def layout_names() -> list[str]:
    return ["auto", *LAYOUTS]


def detect_layout(root: str | os.PathLike) -> str:
    """Guess the layout from the folder structure (``--layout auto``)."""
    root = Path(root)
    if (root / "dataset.json").is_file():
        return "nnunet"
    if (
        (root / "images").is_dir()
        and (root / "labels").is_dir()
        and any((root / "images").glob("*/*_small_*"))
    ):
        return "ivdm3seg-crops"
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if any(
        any(f.glob(f"{_glob_escape(f.name)}-Labels.nii*"))
        or any(f.glob(f"{_glob_escape(f.name)}_*.nii*"))
        for f in folders
    ):
        return "ivdm3seg"
    raise SfdaError(
        f"cannot detect the layout of {root} (no dataset.json, no images/+labels/ crops, "
        f"no <S>/<S>-Labels.nii folders); pass --layout ({', '.join(LAYOUTS)}), "
        f"e.g. --layout pattern --pattern '{EXAMPLE_PATTERN}'"
    )


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)

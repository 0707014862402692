"""What every layout shares: the raw case a finder returns, the Layout record and small helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sfda.errors import SfdaError

SPACING_TOL_MM = 1e-3
EXAMPLE_PATTERN = "{subject}/{subject}_{modality}.nii.gz"


@dataclass
class _Entry:
    """A case as a layout found it, before validation."""

    subject: str
    case_id: str
    images: dict[str, Path] = field(default_factory=dict)
    label: Path | None = None

    def add_image(self, modality: str, path: Path) -> None:
        if modality in self.images:
            raise SfdaError(
                f"case {self.case_id} has two {modality} images: {self.images[modality]} and "
                f"{path}; "
                "remove one of them"
            )
        self.images[modality] = path


@dataclass
class _Found:
    entries: list[_Entry]
    label_names: list[str] | None = None
    modality_order: list[str] | None = None
    #: keep only modalities present in every case (instead of failing)
    common_modalities_only: bool = False


@dataclass(frozen=True)
class Layout:
    """A named dataset layout: how to find its files, and what it expects (for messages)."""

    name: str
    find: Callable[[Path, str | None, str | None], _Found]
    expects: str


def _natural_key(text: str) -> list:
    """Sort volume2 before volume10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _entry(entries: dict[str, _Entry], subject: str, case_id: str) -> _Entry:
    return entries.setdefault(case_id, _Entry(subject, case_id))


def _fmt_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{s:g}" for s in spacing)

"""The case list: sfda's index of a dataset, written once by `sfda data index`.

Everything downstream (training, adaptation, scoring) works from a case list
instead of re-scanning folders, so the subject split and the file paths are
fixed, reviewable and the same on every run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sfda.errors import SfdaError
from sfda.io.atomic import write_json

FORMAT = "sfda-case-list"
VERSION = 1
DEFAULT_LABEL_NAMES = ["background", "foreground"]


@dataclass
class Case:
    """One scan (or crop): its images per modality and its optional label, all absolute paths."""

    subject: str
    case_id: str
    images: dict[str, str]
    label: str | None
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]


@dataclass
class CaseList:
    """All cases of a dataset, with the modalities every case has and the label names."""

    cases: list[Case]
    modalities: list[str]
    label_names: list[str] = field(default_factory=lambda: list(DEFAULT_LABEL_NAMES))
    layout: str = ""
    root: str = ""


#: joins the channels of a multi-channel model's input in one modality name: ``T2+ADC`` reads a case's
#: T2 and ADC images, in that order, as the network's channels 0 and 1
CHANNEL_SEP = "+"


def channels_of(modality: str) -> list[str]:
    """The channel names a modality name reads (one, unless joined by ``+``)."""
    return modality.split(CHANNEL_SEP) if modality else []


def missing_channels(modality: str | None, available) -> list[str]:
    """The channels of ``modality`` (one, or several joined by ``+``) that ``available`` (a case list's
    modalities, or a case's images) lacks."""
    return [m for m in (channels_of(modality) or [modality]) if m not in available]


def channel_files(case: Case, modality: str) -> list[str]:
    """The files of ``case`` that make up ``modality``'s channels, in the network's order."""
    return [case.images[m] for m in channels_of(modality)]


def save_cases(path: str | os.PathLike, case_list: CaseList) -> None:
    """Write the case list as JSON (atomically)."""
    obj: dict[str, Any] = {"format": FORMAT, "version": VERSION, **asdict(case_list)}
    write_json(path, obj)


def load_cases(path: str | os.PathLike) -> CaseList:
    """Read a case list written by :func:`save_cases`; SfdaError with a fix otherwise."""
    p = Path(path)
    fix = f"create it with `sfda data index <root> --out {p}`"
    if not p.is_file():
        raise SfdaError(f"case list {p} not found; {fix}")
    try:
        obj = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SfdaError(f"case list {p} is not valid JSON ({exc}); {fix}") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise SfdaError(f"{p} is not an sfda case list; {fix}")
    try:
        case_list = _from_json(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise SfdaError(f"case list {p} is malformed ({type(exc).__name__}: {exc}); {fix}") from exc
    if not case_list.cases:
        raise SfdaError(
            f"case list {p} holds no cases; re-run `sfda data index` on a folder with data"
        )
    return case_list


def _from_json(obj: dict[str, Any]) -> CaseList:
    cases = [
        Case(
            subject=str(c["subject"]),
            case_id=str(c["case_id"]),
            images={str(k): str(v) for k, v in c["images"].items()},
            label=None if c.get("label") is None else str(c["label"]),
            spacing=_triple(c["spacing"], float),
            shape=_triple(c["shape"], int),
        )
        for c in obj["cases"]
    ]
    return CaseList(
        cases=cases,
        modalities=[str(m) for m in obj["modalities"]],
        label_names=[str(n) for n in obj.get("label_names") or DEFAULT_LABEL_NAMES],
        layout=str(obj.get("layout", "")),
        root=str(obj.get("root", "")),
    )


def _triple(values: Any, kind: type) -> tuple:
    values = tuple(kind(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"expected 3 values, got {len(values)}")
    return values


def subjects(case_list: CaseList) -> list[str]:
    """Subjects in first-seen order (the order of the case list)."""
    return _subject_order(case_list)


def _subject_order(case_list: CaseList) -> list[str]:
    return list(dict.fromkeys(c.subject for c in case_list.cases))


def select_cases(
    case_list: CaseList, subjects: list[str] | None, modality: str | None = None
) -> list[Case]:
    """Cases of the given subjects (all when None), in case-list order.

    Splits are by subject, never by case, so selection is by subject only.
    ``modality`` is only validated (every case has every modality).
    """
    missing = missing_channels(modality, case_list.modalities)
    if modality is not None and missing:
        raise SfdaError(
            f"unknown modality {missing[0]!r}; the case list has: {', '.join(case_list.modalities)}: "
            f"pick one of these (check --modality / the config; a model with several channels takes them "
            f"joined by '{CHANNEL_SEP}', e.g. {CHANNEL_SEP.join(case_list.modalities[:2])})"
        )
    if subjects is None:
        return list(case_list.cases)
    if isinstance(subjects, str):  # a lone name, not its characters
        subjects = [subjects]
    wanted = [str(s) for s in subjects]
    if not wanted:
        raise SfdaError(
            "the subject list is empty; name at least one subject (check --subjects / the config "
            "split)"
        )
    valid = _subject_order(case_list)
    unknown = [s for s in wanted if s not in valid]
    if unknown:
        raise SfdaError(
            f"unknown subject(s) {', '.join(unknown)}; the case list has: {', '.join(valid)}: "
            "fix the subject names (check --subjects / the config split)"
        )
    chosen = set(wanted)
    return [c for c in case_list.cases if c.subject in chosen]


def check_case_files(case: Case) -> None:
    """Fail with a fix when a file of ``case`` has moved since indexing."""
    paths = list(case.images.values()) + ([case.label] if case.label else [])
    for path in paths:
        if not os.path.isfile(path):
            raise SfdaError(
                f"file {path} of case {case.case_id} is missing (moved or deleted since indexing); "
                "re-run `sfda data index`"
            )

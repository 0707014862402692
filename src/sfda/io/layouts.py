"""Turn a dataset folder into a :class:`~sfda.io.cases.CaseList`.

Each layout only *finds* files (subject, case id, image per modality, label);
the shared code then checks, from headers alone, that every case is complete
and that its images and label share one voxel grid.  Catching a mismatched
label at index time costs milliseconds; catching it after an hour of training
costs the hour.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sfda.errors import SfdaError
from sfda.io.cases import DEFAULT_LABEL_NAMES, Case, CaseList
from sfda.io.volume import is_volume_path, read_header, read_volume

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


# --------------------------------------------------------------------------- helpers


def _natural_key(text: str) -> list:
    """Sort volume2 before volume10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _entry(entries: dict[str, _Entry], subject: str, case_id: str) -> _Entry:
    return entries.setdefault(case_id, _Entry(subject, case_id))


# --------------------------------------------------------------------------- ivdm3seg-crops

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


# --------------------------------------------------------------------------- ivdm3seg


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


# --------------------------------------------------------------------------- nnunet


def _find_nnunet(root: Path, pattern: str | None, label_pattern: str | None) -> _Found:
    """nnU-Net raw: dataset.json + imagesTr/<case>_<XXXX><ending> + labelsTr/<case><ending>."""
    meta_path = root / "dataset.json"
    meta = _read_dataset_json(meta_path)
    channels = _nnunet_channels(meta, meta_path)
    label_names = _nnunet_labels(meta, meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    image_re = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending))
    entries: dict[str, _Entry] = {}
    for f in sorted((root / "imagesTr").glob("*")):
        m = image_re.fullmatch(f.name)
        if not m:
            continue
        channel = str(int(m["channel"]))
        if channel not in channels:
            raise SfdaError(
                f"{f} is channel {channel} but {meta_path} declares channels "
                f"{', '.join(sorted(channels))}; fix channel_names or remove the file"
            )
        _entry(entries, m["case"], m["case"]).add_image(channels[channel], f)
    for case_id, e in entries.items():
        e.label = _first_existing(root / "labelsTr" / f"{case_id}{ending}")
    order = [channels[k] for k in sorted(channels, key=int)]
    return _Found(list(entries.values()), label_names=label_names, modality_order=order)


def _read_dataset_json(path: Path) -> dict:
    if not path.is_file():
        raise SfdaError(
            f"{path} not found; the nnunet layout needs nnU-Net's dataset.json (or choose another "
            "--layout)"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SfdaError(f"{path} is not valid JSON ({exc}); fix the file") from exc
    if not isinstance(meta, dict):
        raise SfdaError(
            f"{path} must hold a JSON object with channel_names, labels, file_ending; fix the file"
        )
    return meta


def _nnunet_channels(meta: dict, path: Path) -> dict[str, str]:
    """{"0": "T2"}; nnU-Net v1 called it "modality"."""
    raw = meta.get("channel_names", meta.get("modality"))
    if not isinstance(raw, dict) or not raw:
        raise SfdaError(f'{path} has no channel_names (e.g. {{"0": "T2"}}); add them')
    try:
        channels = {str(int(k)): str(v) for k, v in raw.items()}
    except ValueError:
        raise SfdaError(
            f'{path}: channel_names keys must be channel numbers ("0", "1"...); fix them'
        ) from None
    if len(set(channels.values())) != len(channels):
        raise SfdaError(
            f"{path}: channel_names has repeated names {sorted(channels.values())}; give each "
            "channel its own name"
        )
    return channels


def _nnunet_labels(meta: dict, path: Path) -> list[str]:
    """Label names by value from {"background": 0, "disc": 1} (v2) or {"0": "background"} (v1)."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise SfdaError(f'{path} has no labels (e.g. {{"background": 0, "disc": 1}}); add them')
    if all(isinstance(v, str) for v in raw.values()) and all(str(k).isdigit() for k in raw):
        by_value = {int(k): v for k, v in raw.items()}
    else:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
            raise SfdaError(
                f"{path}: labels must map names to single integer values (region labels are not "
                "supported); fix them"
            )
        by_value = {v: str(k) for k, v in raw.items()}
    if sorted(by_value) != list(range(len(by_value))):
        raise SfdaError(
            f"{path}: label values must be 0..{len(by_value) - 1} without gaps, got "
            f"{sorted(by_value)}; fix them"
        )
    return [by_value[v] for v in range(len(by_value))]


# --------------------------------------------------------------------------- pattern

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _pattern_regex(
    pattern: str, allowed: tuple[str, ...], required: tuple[str, ...], option: str
) -> re.Pattern:
    """Placeholders -> named groups (repeats -> back-references); ``*`` -> any name part."""
    parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        parts.append(_literal(pattern[pos : m.start()]))
        name = m[1]
        if name not in allowed:
            raise SfdaError(
                f"{option} {pattern!r}: unknown placeholder {{{name}}}; use "
                f"{', '.join('{' + a + '}' for a in allowed)}"
            )
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)")
        seen.add(name)
        pos = m.end()
    parts.append(_literal(pattern[pos:]))
    missing = [r for r in required if r not in seen]
    if missing:
        raise SfdaError(
            f"{option} {pattern!r} lacks {', '.join('{' + r + '}' for r in missing)}; "
            f"e.g. --pattern '{EXAMPLE_PATTERN}'"
        )
    return re.compile("".join(parts))


def _literal(text: str) -> str:
    return re.escape(text).replace(r"\*", "[^/]*")


def _relative_files(root: Path) -> list[str]:
    """Volume files under root as posix relative paths, skipping hidden (temporary) ones."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_volume_path(name):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return out


def _find_pattern(root: Path, pattern: str | None, label_pattern: str | None) -> _Found:
    """User pattern with {subject}, {modality}, optional {case}, over paths relative to root."""
    if not pattern:
        raise SfdaError(f"--layout pattern needs --pattern, e.g. --pattern '{EXAMPLE_PATTERN}'")
    image_re = _pattern_regex(
        pattern, ("subject", "modality", "case"), ("subject", "modality"), "--pattern"
    )
    label_re = (
        _pattern_regex(label_pattern, ("subject", "case"), (), "--label-pattern")
        if label_pattern
        else None
    )
    entries: dict[str, _Entry] = {}
    labels: dict[tuple, Path] = {}
    for rel in _relative_files(root):
        lm = label_re.fullmatch(rel) if label_re else None
        if lm:
            labels[tuple(sorted(lm.groupdict().items()))] = root / rel
            continue
        m = image_re.fullmatch(rel)
        if m:
            case_id = m.groupdict().get("case") or m["subject"]
            e = _entry(entries, m["subject"], case_id)
            e.add_image(m["modality"], root / rel)
    if label_re:
        for e in entries.values():
            groups = {"subject": e.subject, "case": e.case_id}
            e.label = labels.get(tuple(sorted((g, groups[g]) for g in label_re.groupindex)))
    return _Found(list(entries.values()))


# --------------------------------------------------------------------------- registry

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


# --------------------------------------------------------------------------- indexing


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


# --------------------------------------------------------------------------- labels & summary


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


def _fmt_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{s:g}" for s in spacing)


def _join_few(items: list[str], limit: int = 3) -> str:
    return (
        ", ".join(items)
        if len(items) <= limit
        else ", ".join(items[:limit]) + f" (+{len(items) - limit} more)"
    )

"""The ``pattern`` layout: the user's --pattern / --label-pattern over paths relative to the root."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sfda.errors import SfdaError
from sfda.io.layouts.common import EXAMPLE_PATTERN, _Entry, _entry, _Found
from sfda.io.volume import is_volume_path

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

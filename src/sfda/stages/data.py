"""``sfda data``: a dataset folder -> a case list (JSON), a case list's summary, the phantom."""

from __future__ import annotations

from pathlib import Path

from sfda.io.cases import CaseList, load_cases, save_cases
from sfda.io.layouts import describe, index_dataset


def index_cases(root: str, out: str, layout: str = "auto", pattern: str | None = None,
                label_pattern: str | None = None) -> CaseList:
    """Scan ``root`` (a known layout, or ``pattern``) into the case list ``out``."""
    cl = index_dataset(root, layout, pattern, label_pattern)
    save_cases(out, cl)
    return cl


def describe_cases(cases: str) -> str:
    """Subjects, modalities, shapes, spacings and labels of a case list, as a table."""
    return describe(load_cases(cases))


def write_phantom(out: str, subjects: int = 8, seed: int = 0) -> CaseList:
    """The built-in synthetic spine phantom (wat/inn) in ``out``."""
    from sfda.data.phantom import make_phantom

    return make_phantom(Path(out), n_subjects=subjects, seed=seed)

"""``sfda data``: a dataset folder -> a case list (JSON), a case list's summary, the phantom."""

from __future__ import annotations

from pathlib import Path

from sfda.errors import SfdaError
from sfda.io.cases import CaseList, load_cases, save_cases
from sfda.io.layouts import describe, index_dataset
from sfda.stages.outputs import case_files, claim_file


def index_cases(root: str, out: str, layout: str = "auto", pattern: str | None = None,
                label_pattern: str | None = None, overwrite: bool = False) -> CaseList:
    """Scan ``root`` (a known layout, or ``pattern``) into the case list ``out``; an existing
    ``out`` only with ``overwrite``, never a scan or label the list names."""
    cl = index_dataset(root, layout, pattern, label_pattern)
    claim_file(out, case_files(cl), overwrite=overwrite)
    save_cases(out, cl)
    return cl


def describe_cases(cases: str) -> str:
    """Subjects, modalities, shapes, spacings and labels of a case list, as a table."""
    return describe(load_cases(cases))


def write_phantom(out: str, subjects: int = 8, seed: int = 0) -> CaseList:
    """The built-in synthetic spine phantom (wat/inn) in ``out``."""
    from sfda.data.phantom import make_phantom

    folder = Path(out)
    if folder.is_dir() and any(folder.iterdir()):
        raise SfdaError(f"{folder} is not empty; the phantom goes into a new or empty folder")
    return make_phantom(folder, n_subjects=subjects, seed=seed)

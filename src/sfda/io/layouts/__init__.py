"""Turn a dataset folder into a :class:`~sfda.io.cases.CaseList`.

Each layout only *finds* files (subject, case id, image per modality, label);
the shared code then checks, from headers alone, that every case is complete
and that its images and label share one voxel grid.  Catching a mismatched
label at index time costs milliseconds; catching it after an hour of training
costs the hour.

Modules: :mod:`~sfda.io.layouts.common` (shared records and helpers), one
finder module per layout family (:mod:`~sfda.io.layouts.ivdm3seg`,
:mod:`~sfda.io.layouts.nnunet`, :mod:`~sfda.io.layouts.pattern`),
:mod:`~sfda.io.layouts.registry` (names and auto-detection),
:mod:`~sfda.io.layouts.index` (validation) and :mod:`~sfda.io.layouts.summary`
(label checks and ``describe``).
"""

from __future__ import annotations

from sfda.io.layouts.common import EXAMPLE_PATTERN, SPACING_TOL_MM, Layout
from sfda.io.layouts.index import index_dataset
from sfda.io.layouts.registry import LAYOUTS, detect_layout, layout_names
from sfda.io.layouts.summary import check_label_array, describe

__all__ = [
    "EXAMPLE_PATTERN",
    "LAYOUTS",
    "SPACING_TOL_MM",
    "Layout",
    "check_label_array",
    "describe",
    "detect_layout",
    "index_dataset",
    "layout_names",
]

"""What the stages share: slices read as a model card's slicing says."""

from __future__ import annotations

import pytest

from sfda.config import DataConfig
from sfda.config.card import Slicing
from sfda.io.cases import load_cases
from sfda.stages.common import decide_axis, slices_for


def test_slices_are_read_only_along_a_decided_axis(tiny_cases):
    cl = load_cases(tiny_cases)
    undecided = DataConfig()  # axis -1: a stage decides it from its training cases (decide_axis)
    with pytest.raises(ValueError, match="decide it first"):
        slices_for(cl, ["P01"], "wat", Slicing.from_config(undecided), with_labels=False, progress=False)
    decided = decide_axis(undecided, cl.cases)
    ss = slices_for(cl, ["P01"], "wat", Slicing.from_config(decided), with_labels=False, progress=False)
    assert decided.axis in (0, 1, 2) and len(ss) > 0

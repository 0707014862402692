"""The per-scan safety net's rules on known fractions."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.metrics.scan_check import scan_flags, scan_signals

NAMES = ["background", "liver", "kidney"]


def _signals(source, adapted, prior, pixels=10_000):
    return {"pixels": pixels, "fractions": {"source": source, "adapted": adapted, "prior": prior}}


@pytest.mark.parametrize("source, adapted, prior, words", [
    ([0.10, 0.02], [0.09, 0.03], [0.10, 0.02], None),
    ([0.10, 0.02], [0.10, 0.001], [0.10, 0.02], "kidney vanishes"),
    ([0.10, 0.0], [0.10, 0.015], [0.10, 0.02], None),          # found where the source model found nothing
    ([0.10, 0.001], [0.10, 0.0], [0.10, 0.0], None),           # a false positive the prior does not expect
    ([0.10, 0.02], [0.10, 0.10], [0.10, 0.02], "kidney floods"),
    ([0.10, 0.02], [0.10, 0.10], None, "kidney floods"),
    ([0.10, 0.0019], [0.10, 0.0], [0.10, 0.02], None),         # 19 source pixels: too few to judge
])
def test_vanish_and_flood(source, adapted, prior, words):
    flags = scan_flags(_signals(source, adapted, prior), NAMES)
    assert flags == [] if words is None else any(words in x and k == 2 for k, x in flags)


@pytest.mark.parametrize("agreement, moved", [([0.9, 0.5], False), ([0.9, 0.1], True), ([0.9, None], False)])
def test_a_structure_that_moves_is_distrusted(agreement, moved):
    signals = {**_signals([0.10, 0.02], [0.10, 0.02], [0.10, 0.02]), "agreement": agreement}
    assert any("kidney moved" in x and k == 2 for k, x in scan_flags(signals, NAMES)) == moved


def test_signals_on_masks():
    valid = np.ones((2, 10, 10), bool)
    src = np.zeros((2, 10, 10), np.int64)
    src[:, :5, :5] = 1
    ada = src.copy()
    ada[:, :5, :2] = 0
    probs = np.stack([src == 0, src == 1, np.zeros_like(src, bool)], axis=1).astype(np.float32)
    out = scan_signals((src, probs), (ada, probs), valid, np.tile([0.75, 0.25, 0.0], (2, 1)))
    assert out["fractions"]["source"] == [0.25, 0.0] and out["fractions"]["adapted"] == [0.15, 0.0]
    assert out["agreement"][0] == pytest.approx(2 * 15 / (25 + 15)) and out["agreement"][1] is None
    assert out["entropy"]["source"] == pytest.approx(0.0, abs=1e-6)

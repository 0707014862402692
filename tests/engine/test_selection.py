"""Label-free epoch selection and the collapse flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfda.config import MethodConfig
from sfda.engine.loop import _flag_collapse
from sfda.engine.selection import holdout_scores, select_epoch
from sfda.methods import build_method


def test_select_epoch_minimum_last_on_ties_and_fallbacks():
    log = [{"epoch": 1, "holdout_kl": 0.3}, {"epoch": 2, "holdout_kl": 0.1}, {"epoch": 3, "holdout_kl": 0.1},
           {"epoch": 4, "holdout_kl": 0.2}]
    assert select_epoch(log, "holdout_kl") == 3
    assert select_epoch(log, "last") == 4
    assert select_epoch(log, "holdout_entropy") is None
    assert select_epoch([], "last") is None


class _Const(torch.nn.Module):
    """Predicts the same class probabilities (p_bg, p_fg) at every pixel."""

    def __init__(self, fg: float):
        super().__init__()
        self.logit = float(np.log(fg / (1 - fg)))

    def forward(self, x):
        z = torch.zeros(x.shape[0], 2, *x.shape[2:])
        z[:, 1] = self.logit
        return z


def test_holdout_scores_match_the_analytic_values():
    fg = 0.2
    images = np.zeros((5, 1, 4, 6), dtype=np.float32)
    valid = np.ones((5, 4, 6), dtype=bool)
    prior = np.tile([0.9, 0.1], (5, 1)).astype(np.float32)
    out = holdout_scores(_Const(fg), images, valid, prior, lam=2.0)
    ent = -(fg * np.log(fg) + (1 - fg) * np.log(1 - fg))
    kl = 0.9 * np.log(0.9 / 0.8) + 0.1 * np.log(0.1 / 0.2)
    assert out["holdout_entropy"] == pytest.approx(ent, rel=1e-5)
    assert out["holdout_kl"] == pytest.approx(kl, rel=1e-4)
    assert out["holdout_objective"] == pytest.approx(ent + 2.0 * kl, rel=1e-4)
    assert out["holdout_fraction"] == 0.0  # argmax is background everywhere
    assert out["holdout_prior_fraction"] == pytest.approx(0.1)


@pytest.mark.parametrize("row, flagged", [
    ({"epoch": 1, "pred_fraction": 0.10, "prior_fraction": 0.12}, False),
    ({"epoch": 1, "pred_fraction": 0.0, "prior_fraction": 0.12}, True),
    ({"epoch": 1, "pred_fraction": 0.01, "prior_fraction": 0.12}, True),
    ({"epoch": 1, "pred_fraction": 0.10, "prior_fraction": 0.12, "holdout_fraction": 0.6,
      "holdout_prior_fraction": 0.12}, True),
    ({"epoch": 1, "holdout_fraction": 0.11, "holdout_prior_fraction": 0.12}, False),
])
def test_collapse_flag_on_adaptation_and_held_out_images(row, flagged):
    _flag_collapse(row, build_method("adaent", MethodConfig()))
    assert ("collapse" in row) == flagged
    if flagged and "holdout_fraction" in row and row.get("pred_fraction") == 0.10:
        assert "held-out" in row["collapse"]

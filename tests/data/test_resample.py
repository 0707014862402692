"""In-plane resampling: sizes, label values, probabilities, and the way back."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.config.rules import check_resample
from sfda.data.resample import grid_shape, grid_spacing, resize
from sfda.errors import SfdaError


def test_grid_by_size_or_by_spacing():
    assert grid_shape((257, 240), (1.5, 1.5), size=[128, 128]) == (128, 128)
    assert grid_shape((257, 240), (1.5, 1.5), spacing=[3.0, 3.0]) == (128, 120)  # 385.5 mm / 3 = 128.5 -> 128
    assert grid_shape((257, 240), (1.5, 1.5)) == (257, 240)
    assert grid_spacing((256, 256), (1.25, 1.25), (128, 128)) == (2.5, 2.5)


@pytest.mark.parametrize("size, spacing, words", [([128], [], "takes two values"), ([1, 2], [1.0, 1.0], "choose one")])
def test_malformed_choices_are_refused(size, spacing, words):
    with pytest.raises(SfdaError, match=words):
        check_resample(size, spacing)


def test_labels_keep_their_values_and_place():
    lab = np.zeros((2, 40, 40), np.int64)
    lab[:, 10:30, 5:15] = 3
    lab[:, 12:20, 25:35] = 1
    small = resize(lab, (20, 20), labels=True)
    assert small.dtype == np.int64 and set(np.unique(small)) == {0, 1, 3}
    back = resize(small, (40, 40), labels=True)
    for k in (1, 3):  # pixel centres aligned: each structure stays in place
        assert np.allclose(np.argwhere(back == k).mean(axis=0), np.argwhere(lab == k).mean(axis=0), atol=1.0)


def test_probabilities_stay_a_distribution_and_a_constant_image_stays_constant():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(3, 17, 23)).transpose(0, 3, 1, 2).astype(np.float32)
    for hw in ((40, 50), (8, 9)):
        out = resize(p, hw)
        assert out.shape == (3, 4, *hw) and out.min() >= 0
        np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(resize(np.full((1, 30, 30), 2.5, np.float32), (11, 13)), 2.5, atol=1e-6)
    same = np.ones((1, 5, 5), np.float32)
    assert resize(same, (5, 5)) is same

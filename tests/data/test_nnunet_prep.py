"""nnU-Net's preprocessing, on arrays small enough to know the answer by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.data.nnunet_prep import coarse_axis, new_shape, nonzero_box, resample, resize, uncrop


def test_the_nonzero_box_and_its_way_back():
    a = np.zeros((5, 6, 4))
    a[1, 2, 1], a[3, 4, 2] = 1.0, -2.0
    box = nonzero_box(a)
    assert box == (slice(1, 4), slice(2, 5), slice(1, 3))
    assert nonzero_box(np.zeros((2, 3))) == (slice(0, 2), slice(0, 3))  # nothing: the whole array
    probs = np.ones((2, 3, 3, 2), np.float32) * 0.5
    back = uncrop(probs, box, a.shape, np.array([1.0, 0.0], np.float32))
    assert back.shape == (2, 5, 6, 4)
    assert (back[:, 1:4, 2:5, 1:3] == 0.5).all()
    assert back[0, 0, 0, 0] == 1.0 and back[1, 0, 0, 0] == 0.0  # background outside the box


def test_new_shape_rounds_as_nnunet():
    assert new_shape((10, 37, 41), (3.0, 1.0, 1.0), (3.0, 0.8, 0.8)) == (10, 46, 51)  # 46.25, 51.25
    assert new_shape((4,), (1.0,), (0.8,)) == (5,)


def test_the_coarse_axis_is_resampled_on_its_own_only_when_anisotropic():
    assert coarse_axis((0.8, 0.8, 3.0), (0.8, 0.8, 3.0)) == 2  # 3.75 > 3
    assert coarse_axis((1.0, 1.0, 2.5), (1.0, 1.0, 1.0)) is None  # 2.5: isotropic enough
    assert coarse_axis((1.0, 1.0, 1.0), (4.0, 1.0, 1.0)) == 0  # the new spacing decides then
    assert coarse_axis((4.0, 4.0, 1.0), (4.0, 4.0, 1.0)) is None  # two coarse axes: all together


def test_linear_resampling_aligns_pixel_centres_and_holds_the_edges():
    """Order 1, two samples to four: centres at -0.25, 0.25, 0.75, 1.25 of the old grid, the edge
    value held beyond it (skimage's mode edge)."""
    out = resize(np.array([0.0, 1.0]), (4,), order=1)
    assert np.allclose(out, [0.0, 0.25, 0.75, 1.0])


def test_cubic_resampling_is_clipped_to_the_input_range():
    step = np.r_[np.zeros(6), np.ones(6)]
    out = resize(step, (29,), order=3)
    assert out.min() >= 0.0 and out.max() <= 1.0 and 0 < out[14] < 1  # cubic overshoot clipped


def test_the_coarse_axis_takes_the_nearest_plane():
    """Spacing 1 x 1 x 4 mm to 1 x 1 x 2: each new plane along z is a copy of the nearest old one
    (order 0); in plane nothing changes."""
    v = np.stack([np.full((3, 3), float(k)) for k in range(3)], axis=-1)  # plane k holds k
    out = resample(v, (3, 3, 6), (1.0, 1.0, 4.0), (1.0, 1.0, 2.0), order=3)
    assert out.shape == (3, 3, 6)
    assert np.array_equal(out[0, 0], [0, 0, 1, 1, 2, 2])  # centres -0.25, 0.25, 0.75, ... rounded


@pytest.mark.parametrize("shape", [(6, 7, 5), (6, 7, 9)])
def test_resampling_to_the_same_shape_returns_the_input(shape):
    v = np.random.default_rng(0).normal(size=shape)
    assert resample(v, shape, (1, 1, 1), (2, 2, 2), order=3) is v

from __future__ import annotations

import numpy as np
import pytest

from sfda.errors import SfdaError
from sfda.priors.estimate import (apply_tags, constant_prior, model_prior, relative_positions, sizes_given_present,
                                  source_mean_ratios, source_position_prior)
from sfda.priors.table import load_prior, save_prior


def test_constant_prior_repeats_and_validates():
    tau = constant_prior(3, [0.9, 0.1])
    assert tau.shape == (3, 2) and np.allclose(tau, [[0.9, 0.1]] * 3)
    with pytest.raises(SfdaError, match="summing to one"):
        constant_prior(3, [0.5, 0.2])


def test_source_mean_uses_only_slices_with_the_structure():
    ratios = np.array([[1.0, 0.0], [0.8, 0.2], [0.6, 0.4]])
    assert np.allclose(source_mean_ratios(ratios), [0.7, 0.3])
    with pytest.raises(SfdaError):
        source_mean_ratios(np.array([[1.0, 0.0]]))


def test_relative_positions_span_zero_to_one():
    assert np.allclose(relative_positions(np.array([0, 2, 4]), np.array([5, 5, 5])), [0, 0.5, 1])


def test_position_prior_follows_the_source_profile():
    # Source: foreground 0 at the ends, 0.3 in the middle, over volumes of 11 slices.
    idx = np.tile(np.arange(11), 4)
    pos = relative_positions(idx, np.full_like(idx, 11))
    fg = np.where(np.abs(pos - 0.5) <= 0.2, 0.3, 0.0)
    ratios = np.stack([1 - fg, fg], axis=1)
    # Target volumes of another depth (21 slices) get the same profile by relative position.
    t_idx = np.arange(21)
    tau = source_position_prior(ratios, pos, relative_positions(t_idx, np.full_like(t_idx, 21)), bins=11)
    assert np.allclose(tau.sum(axis=1), 1)
    assert tau[0, 1] == pytest.approx(0.0) and tau[-1, 1] == pytest.approx(0.0)
    assert tau[10, 1] == pytest.approx(0.3)
    assert np.all(tau[:, 1] >= 0) and np.all(tau[:, 1] <= 0.3 + 1e-6)


def test_position_prior_tags_positions_where_the_source_rarely_has_the_structure():
    # 10 source volumes of 5 slices: slice 1 holds the structure in 2 of 10, slice 2 in all, slice 3 in 6.
    idx = np.tile(np.arange(5), 10)
    fg = np.zeros(len(idx))
    fg[(idx == 1) & (np.repeat(np.arange(10), 5) < 2)] = 0.1
    fg[idx == 2] = 0.3
    fg[(idx == 3) & (np.repeat(np.arange(10), 5) < 6)] = 0.1
    ratios = np.stack([1 - fg, fg], axis=1)
    pos = relative_positions(idx, np.full_like(idx, 5))
    centres = np.array([0.1, 0.3, 0.5, 0.7, 0.9])  # of the 5 position bins: no interpolation in between
    soft = source_position_prior(ratios, pos, centres, bins=5)
    tagged = source_position_prior(ratios, pos, centres, bins=5, min_presence=0.5)
    assert np.allclose(soft[:, 1], [0.0, 0.02, 0.3, 0.06, 0.0], atol=1e-6)
    assert np.allclose(tagged[:, 1], [0.0, 0.0, 0.3, 0.06, 0.0], atol=1e-6)  # slice 1: 20 % < 50 %: empty
    assert np.allclose(tagged.sum(axis=1), 1)


def test_tags_zero_the_structure_where_absent():
    tau = apply_tags(np.array([[0.8, 0.2], [0.8, 0.2]]), np.array([True, False]))
    assert np.allclose(tau, [[0.8, 0.2], [1.0, 0.0]])


def test_prior_table_round_trip_and_refusals(tmp_path):
    path = tmp_path / "tau.csv"
    save_prior(path, ["a:0", "a:1"], np.array([[0.9, 0.1], [1.0, 0.0]]), ["background", "disc"])
    assert np.allclose(load_prior(path, ["a:1", "a:0"], 2), [[1.0, 0.0], [0.9, 0.1]])
    with pytest.raises(SfdaError, match="no row for 1 target slices"):
        load_prior(path, ["a:0", "b:0"], 2)
    path.write_text("slice_id,background,disc\na:0,0.5,0.2\n")
    with pytest.raises(SfdaError, match="do not sum to one"):
        load_prior(path, ["a:0"], 2)


def test_model_prior_is_the_mean_softmax_over_real_pixels():
    import torch

    class Sign(torch.nn.Module):  # foreground logit +20 where the image is positive, -20 elsewhere
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), 40 * (x > 0).float() - 20], dim=1)

    images = -np.ones((3, 1, 4, 4), dtype=np.float32)
    images[0, 0, :2] = 1.0          # 8 of 16 pixels
    images[1, 0, 0, 0] = 1.0        # 1 of 16
    images[2, 0, 3] = 1.0           # only in the padding row
    valid = np.ones((3, 4, 4), dtype=bool)
    valid[:, 3] = False             # last row is padding: 12 real pixels per slice
    tau = model_prior(Sign(), images, valid, batch_size=2)
    assert tau.shape == (3, 2) and tau.dtype == np.float32
    assert np.allclose(tau[:, 1], [8 / 12, 1 / 12, 0.0], atol=1e-6)
    assert np.allclose(tau.sum(axis=1), 1.0, atol=1e-6)


def test_tags_per_structure_zero_each_absent_one_and_renormalise():
    tau = np.array([[0.7, 0.1, 0.2], [0.7, 0.1, 0.2], [0.7, 0.1, 0.2]])
    present = np.array([[True, True], [True, False], [False, False]])
    out = apply_tags(tau, present)
    assert np.allclose(out, [[0.7, 0.1, 0.2], [0.875, 0.125, 0.0], [1.0, 0.0, 0.0]])
    # A tag per slice is the same as every structure tagged alike.
    assert np.allclose(apply_tags(tau, np.array([True, True, False])), apply_tags(tau, present[[0, 0, 2]]))


def test_sizes_given_present_average_only_the_slices_holding_each_structure():
    # Structure 1 covers 0.2 where present (half the slices), structure 2 covers 0.1 in one slice.
    ratios = np.array([[0.8, 0.2, 0.0], [1.0, 0.0, 0.0], [0.7, 0.2, 0.1], [1.0, 0.0, 0.0]])
    assert np.allclose(sizes_given_present(ratios), [0.2, 0.1])
    # Per position: structure 1 is 0.2 at the first half, 0.4 at the second; structure 2 only at
    # the first, so the second half gets its value from there (interpolation holds the end value).
    ratios = np.array([[0.8, 0.2, 0.0], [0.7, 0.2, 0.1], [0.6, 0.4, 0.0], [1.0, 0.0, 0.0]])
    pos = np.array([0.1, 0.2, 0.8, 0.9])
    sizes = sizes_given_present(ratios, pos, np.array([0.15, 0.85]), bins=2)
    assert np.allclose(sizes, [[0.2, 0.1], [0.4, 0.1]])


def test_tags_with_sizes_give_each_present_structure_its_size_where_present():
    tau = np.array([[0.97, 0.01, 0.02], [0.97, 0.01, 0.02], [0.97, 0.01, 0.02]], dtype=np.float32)
    present = np.array([[True, True], [True, False], [False, False]])
    out = apply_tags(tau, present, np.array([0.3, 0.1]))
    assert out.dtype == np.float32
    assert np.allclose(out, [[0.6, 0.3, 0.1], [0.7, 0.3, 0.0], [1.0, 0.0, 0.0]])
    # Sizes that together exceed the slice are scaled down to fill it, never a negative background.
    assert np.allclose(apply_tags(tau[:1], present[:1], np.array([0.9, 0.6])), [[0.0, 0.6, 0.4]])

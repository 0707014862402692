"""3D samples (slicing.dims 3): whole volumes padded and back, resampled and back, ratios per volume."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.config.rules import check_resample
from sfda.data.resample import resize_volume
from sfda.data.sliceset import case_volumes, label_ratios, subject_volumes
from sfda.data.slices import crop_centre, pad_centre
from sfda.config.card import Slicing
from sfda.data.volumeset import VolumeSet, build_volumeset
from sfda.errors import SfdaError
from sfda.io.cases import load_cases


def test_pad_and_crop_are_exact_inverses_on_the_last_axes():
    v = np.arange(2 * 5 * 6 * 7).reshape(2, 5, 6, 7)
    padded = pad_centre(v, (8, 8, 16), -1)
    assert padded.shape == (2, 8, 8, 16) and (padded == -1).sum() == 2 * (8 * 8 * 16 - 5 * 6 * 7)
    assert np.array_equal(crop_centre(padded, (5, 6, 7)), v)


def test_label_ratios_count_real_voxels_only():
    labels = np.zeros((1, 2, 2, 2), np.int64)
    labels[0, 0, 0, 0], labels[0, 1, 1, 1] = 1, 2
    valid = np.ones_like(labels, bool)
    valid[0, 1] = False  # half the volume is padding: voxel (1,1,1) does not count
    assert np.allclose(label_ratios(labels, valid, 3), [[0.75, 0.25, 0.0]])


def test_each_case_is_one_padded_volume_and_comes_back_exactly(tiny_cases):
    cl = load_cases(tiny_cases)
    vs = build_volumeset(cl.cases, "wat", Slicing(dims=3, pad_multiple=16), label_names=cl.label_names, progress=False)
    assert isinstance(vs, VolumeSet) and vs.dims == 3
    assert vs.images.shape == (3, 1, 16, 32, 32) and vs.labels.shape == (3, 16, 32, 32)  # 8 -> 16: a multiple of 16
    assert vs.slice_ids == [f"{c.case_id}:volume" for c in cl.cases]
    assert vs.valid_mask().sum() == 3 * 8 * 32 * 32
    from sfda.io.volume import read_volume

    for case, vol in zip(cl.cases, case_volumes(vs, vs.labels)):
        assert np.array_equal(vol, read_volume(case.label, dtype=None).array)
    assert set(subject_volumes(vs, vs.labels)) == {"P01", "P02", "P03"}
    assert np.allclose(vs.foreground_fractions().sum(axis=1), 1)
    with pytest.raises(SfdaError, match="source-mean"):
        vs.positions()


def test_resampled_volumes_keep_their_structures_in_place(tiny_cases):
    cl = load_cases(tiny_cases)
    vs = build_volumeset(cl.cases[:1], "wat", Slicing(dims=3, pad_multiple=8, size=(4, 16, 16)), label_names=cl.label_names,
                         progress=False)
    assert vs.images.shape == (1, 1, 8, 16, 16) and vs.grid(cl.cases[0]) == (4, 16, 16)
    small = case_volumes(vs, vs.labels)[0]
    from sfda.io.volume import read_volume

    truth = read_volume(cl.cases[0].label, dtype=None).array
    back = resize_volume(small, truth.shape, labels=True)
    assert back.shape == truth.shape and set(np.unique(back)) <= set(np.unique(truth))
    # nearest neighbour there and back: the structure keeps its place up to a voxel of the coarse grid
    assert np.allclose(np.argwhere(back > 0).mean(axis=0), np.argwhere(truth > 0).mean(axis=0), atol=2.0)


def test_a_forced_shape_smaller_than_a_volume_is_refused(tiny_cases):
    cl = load_cases(tiny_cases)
    with pytest.raises(SfdaError, match="larger than the model's input"):
        build_volumeset(cl.cases[:1], "wat", hw=(8, 16, 16), label_names=cl.label_names, progress=False)


def test_3d_resampling_takes_one_value_per_axis():
    check_resample([4, 16, 16], [], dims=3)
    with pytest.raises(SfdaError, match="takes three values"):
        check_resample([16, 16], [], dims=3)
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=(5, 6, 7)).transpose(3, 0, 1, 2).astype(np.float32)
    np.testing.assert_allclose(resize_volume(p, (9, 4, 11)).sum(axis=0), 1, atol=1e-5)

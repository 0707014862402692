"""Volumes <-> 2D slices, normalisation, and the cached SliceSet."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfda.data import sliceset as sliceset_mod
from sfda.data.normalize import normalize_volume
from sfda.data.slices import common_target, from_slices, padded_size, slice_shape, to_slices
from sfda.config.card import Normalization, Slicing
from sfda.data.sliceset import build_sliceset
from sfda.errors import SfdaError
from sfda.io.cases import load_cases


# --------------------------------------------------------------------------- slices


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
       axis=st.sampled_from([0, 1, 2]), multiple=st.sampled_from([1, 2, 3, 4, 8, 16]),
       kind=st.sampled_from(["int", "float"]), seed=st.integers(0, 2**32 - 1))
def test_round_trip_exact_every_axis(shape, axis, multiple, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "int":
        vol = rng.integers(-1000, 1000, size=shape).astype(np.int32)
    else:
        vol = rng.standard_normal(shape).astype(np.float32)
    hw = tuple(padded_size(s, multiple) for s in slice_shape(shape, axis))
    slices = to_slices(vol, axis, hw, fill=-7)
    assert slices.shape == (shape[axis], *hw)
    assert slices.dtype == vol.dtype
    for size, padded in zip(slice_shape(shape, axis), hw):
        assert padded % multiple == 0 and size <= padded < size + multiple
    back = from_slices(slices, axis, shape)
    assert back.shape == shape and back.dtype == vol.dtype
    assert np.array_equal(back, vol)
    # padding holds only the fill value
    assert (slices == -7).sum() >= slices.size - vol.size


def test_round_trip_into_a_larger_common_target():
    rng = np.random.default_rng(0)
    shapes = [(5, 7, 9), (3, 11, 4)]
    for axis in (0, 1, 2):
        hw = common_target(shapes, axis, 8)
        assert all(s % 8 == 0 for s in hw)
        for shape in shapes:
            vol = rng.standard_normal(shape)
            assert np.array_equal(from_slices(to_slices(vol, axis, hw), axis, shape), vol)


def test_slicing_axis_convention():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(to_slices(vol, 0, (3, 4))[1], vol[1])
    assert np.array_equal(to_slices(vol, 1, (2, 4))[2], vol[:, 2, :])
    assert np.array_equal(to_slices(vol, 2, (2, 3))[3], vol[:, :, 3])


# --------------------------------------------------------------------------- normalisation


def test_normalize_volume_zscore():
    vol = np.random.default_rng(1).gamma(2.0, 50.0, size=(6, 7, 8))
    out = normalize_volume(vol, 0.5, 99.5)
    assert out.dtype == np.float32
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-3


def test_normalize_constant_volume_refused():
    with pytest.raises(SfdaError, match="constant intensity") as err:
        normalize_volume(np.full((4, 4, 4), 3.0), source="scan.nii.gz")
    assert "scan.nii.gz" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_normalize_non_finite_refused(bad):
    vol = np.random.default_rng(2).standard_normal((4, 4, 4))
    vol[1, 2, 3] = bad
    with pytest.raises(SfdaError, match="NaN/inf") as err:
        normalize_volume(vol, source="scan.nii.gz")
    assert "scan.nii.gz" in str(err.value)


# --------------------------------------------------------------------------- SliceSet


def test_build_sliceset_shapes_dtypes_and_padding(tiny_cases):
    cl = load_cases(tiny_cases)
    ss = build_sliceset(cl.cases, "wat", Slicing(axis=0, pad_multiple=24), with_labels=True,
                        label_names=cl.label_names, progress=False)
    n = 3 * 8
    assert len(ss) == n and ss.hw == (48, 48)
    assert ss.images.shape == (n, 1, 48, 48) and ss.images.dtype == np.float32
    assert ss.labels.shape == (n, 48, 48) and ss.labels.dtype == np.int64
    assert ss.case_index.dtype == np.int64 and ss.slice_index.dtype == np.int64
    assert np.array_equal(ss.case_index, np.repeat([0, 1, 2], 8))
    assert np.array_equal(ss.slice_index, np.tile(np.arange(8), 3))
    assert ss.slice_ids[:2] == ["P01:0", "P01:1"] and ss.slice_ids[-1] == "P03:7"
    valid = ss.valid_mask()
    assert valid.shape == (n, 48, 48) and valid.dtype == bool
    inner = np.zeros((48, 48), dtype=bool)
    inner[8:40, 8:40] = True  # 32 -> 48: 8 voxels of padding on each side
    assert (valid == inner).all()
    assert (ss.labels[:, ~inner] == 0).all() and ss.labels[:, inner].max() == 1
    # padding is filled with each case's minimum, so it reads as background
    for c in range(3):
        rows = ss.images[ss.case_index == c, 0]
        assert np.allclose(rows[:, ~inner], rows[:, inner].min())
    fr = ss.foreground_fractions()
    assert fr.shape == (n, 2) and np.allclose(fr.sum(axis=1), 1)
    # fractions count the real pixels only, not the padding
    truth = (ss.labels[:, inner] == 1).mean(axis=1)
    assert np.allclose(fr[:, 1], truth)


def test_build_sliceset_other_axis_and_no_labels(tiny_cases):
    cl = load_cases(tiny_cases)
    ss = build_sliceset(cl.cases[:1], "inn", Slicing(axis=1, pad_multiple=16), with_labels=False, progress=False)
    assert ss.images.shape == (32, 1, 16, 32) and ss.labels is None
    assert ss.valid_mask()[0, 4:12].all() and not ss.valid_mask()[0, :4].any()
    with pytest.raises(SfdaError, match="no labels"):
        ss.foreground_fractions()


def test_build_sliceset_refuses_bad_selection(tiny_cases):
    cl = load_cases(tiny_cases)
    with pytest.raises(SfdaError, match="no cases"):
        build_sliceset([], "wat", progress=False)
    with pytest.raises(SfdaError, match="no modality 'opp'"):
        build_sliceset(cl.cases, "opp", progress=False)


def test_cache_reused_without_reading_volumes(tiny_cases, tmp_path, monkeypatch):
    cl = load_cases(tiny_cases)
    cache = str(tmp_path / "cache")
    kw = dict(with_labels=True, label_names=cl.label_names, cache_dir=cache, progress=False)
    slicing = Slicing(axis=0, pad_multiple=16)
    first = build_sliceset(cl.cases, "wat", slicing, **kw)
    assert any((tmp_path / "cache").rglob("done.json"))

    def refuse(*args, **kwargs):
        raise AssertionError("read_volume called although the cache matches")

    monkeypatch.setattr(sliceset_mod, "read_volume", refuse)
    again = build_sliceset(cl.cases, "wat", slicing, **kw)
    for name in ("images", "labels", "case_index", "slice_index"):
        a, b = getattr(first, name), getattr(again, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert again.images.flags.writeable and again.images.flags.c_contiguous
    # other slicing parameters are another cache entry: they must read the volumes
    with pytest.raises(AssertionError, match="read_volume called"):
        build_sliceset(cl.cases, "wat", replace(slicing, axis=2), **kw)
    with pytest.raises(AssertionError, match="read_volume called"):
        build_sliceset(cl.cases, "wat", replace(slicing, norm=Normalization.percentile(1.0, 99.0)), **kw)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_volumes_assemble_the_same_whatever_the_slice_order(data):
    """Predictions come back per slice in any order (shuffled batches, several ranks): assembling
    them into volumes and subjects depends only on each slice's case and position, not on row order."""
    from sfda.data.sliceset import SliceSet
    from sfda.data.sliceset import case_volumes, subject_volumes
    from sfda.io.cases import Case

    axis = data.draw(st.integers(0, 2), label="axis")
    n_cases = data.draw(st.integers(1, 3), label="cases")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    cases, vols = [], []
    for c in range(n_cases):
        shape = tuple(int(v) for v in rng.integers(2, 7, size=3))
        cases.append(Case(subject=f"S{c % 2}", case_id=f"S{c % 2}_{c}", images={"x": "x"}, label=None,
                          spacing=(1.0, 1.0, 1.0), shape=shape))
        vols.append(rng.integers(0, 3, size=shape).astype(np.uint8))
    hw = common_target([c.shape for c in cases], axis, 4)
    slices = [to_slices(v, axis, hw, fill=0) for v in vols]
    maps = np.concatenate(slices)
    ss = SliceSet(images=np.zeros((len(maps), 1, *hw), np.float32), labels=None,
                  case_index=np.concatenate([np.full(len(s), i) for i, s in enumerate(slices)]),
                  slice_index=np.concatenate([np.arange(len(s)) for s in slices]), cases=cases, modality="x",
                  axis=axis, hw=tuple(hw))
    perm = rng.permutation(len(maps))
    shuffled = SliceSet(images=ss.images[perm], labels=None, case_index=ss.case_index[perm],
                        slice_index=ss.slice_index[perm], cases=cases, modality="x", axis=axis, hw=tuple(hw))
    for got, want in zip(case_volumes(shuffled, maps[perm]), vols):
        assert np.array_equal(got, want)
    a, b = subject_volumes(ss, maps), subject_volumes(shuffled, maps[perm])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

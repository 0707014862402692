"""Streamed inference: the same probabilities as the whole-volume path, with memory bounded by a batch."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from sfda.data.normalize import normalize_volume
from sfda.data.slices import from_slices, padded_size, slice_shape, to_slices
from sfda.inference import predict_slices, stream_volume
from sfda.nets import build_net

META = {"normalization": {"clip_low": 0.5, "clip_high": 99.5}, "slicing": {"axis": 0, "pad_multiple": 8}}


def _net(classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("unet", in_channels=1, num_classes=classes, width=4, depth=2).eval()


def _whole_volume(model, meta, array):
    """The pre-streaming computation: normalise all, slice all, predict all, stack all."""
    img = normalize_volume(array, 0.5, 99.5)
    axis = meta["slicing"]["axis"]
    hw = tuple(padded_size(s, meta["slicing"]["pad_multiple"]) for s in slice_shape(img.shape, axis))
    slices = np.ascontiguousarray(to_slices(img, axis, hw, fill=float(img.min()))[:, None])
    _, p = predict_slices(model, slices, probabilities=True)
    return np.stack([from_slices(p[:, k], axis, img.shape) for k in range(p.shape[1])])


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("order", ["C", "F"])
def test_streamed_volume_matches_the_whole_volume_path(axis, order):
    array = np.asarray(np.random.default_rng(axis).gamma(2.0, 40.0, size=(7, 13, 10)), order=order)
    array = array.astype(np.int16 if order == "F" else np.float32)  # stored types are kept as they are
    meta = {**META, "slicing": {"axis": axis, "pad_multiple": 8}}
    model = _net()
    out = stream_volume(model, meta, array, "scan", batch_size=2, entropy=True, probabilities=True)
    want = _whole_volume(model, meta, array)
    np.testing.assert_allclose(out["probabilities"], want, atol=1e-6)
    assert np.array_equal(out["labels"], want.argmax(axis=0))
    p = np.clip(want, 1e-12, 1)
    np.testing.assert_allclose(out["entropy"], -(p * np.log(p)).sum(axis=0), atol=1e-5)


@pytest.mark.parametrize("order", ["C", "F"])  # NIfTI volumes arrive in Fortran order
def test_streamed_prediction_holds_no_whole_volume_probabilities(monkeypatch, order):
    """Peak numpy memory while predicting a 64x64x160 float32 volume stays under 1.5 times the volume
    (one float32 copy for the exact percentiles, then the uint8 mask and one batch); the whole-volume
    path needed 6.6 (normalised copy, padded copy, probabilities, their concatenation and stack)."""
    array = np.asarray(np.random.default_rng(0).normal(100, 20, size=(160, 64, 64)).astype(np.float32), order=order)
    model = _net(2)
    monkeypatch.setattr("sfda.io.slabs.SLAB_VOXELS", 64 * 64 * 8)  # slabs smaller than the volume, as on a real scan
    tracemalloc.start()
    try:
        stream_volume(model, META, array, "scan", batch_size=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * array.nbytes, f"peak {peak / 2**20:.1f} MiB for a {array.nbytes / 2**20:.1f} MiB volume"


def test_resampled_slices_go_back_to_the_scans_own_grid():
    """A checkpoint trained on 16x16 slices: a 30x22 scan is predicted on that grid and its
    probabilities come back to 30x22 (still a distribution) before the argmax."""
    from sfda.data.resample import resize

    array = np.random.default_rng(3).gamma(2.0, 40.0, size=(5, 30, 22)).astype(np.float32)
    meta = {**META, "slicing": {"axis": 0, "pad_multiple": 8, "size": [16, 16]}}
    model = _net()
    out = stream_volume(model, meta, array, "scan", batch_size=2, probabilities=True, spacing=(3.0, 1.0, 1.5))
    assert out["labels"].shape == array.shape and out["probabilities"].shape == (3, *array.shape)
    np.testing.assert_allclose(out["probabilities"].sum(axis=0), 1, atol=1e-5)
    img = normalize_volume(array, 0.5, 99.5)
    _, p = predict_slices(model, np.ascontiguousarray(resize(img, (16, 16))[:, None]), probabilities=True)
    np.testing.assert_allclose(out["probabilities"], resize(p, (30, 22)).transpose(1, 0, 2, 3), atol=1e-5)
    assert np.array_equal(out["labels"], out["probabilities"].argmax(axis=0))

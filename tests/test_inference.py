"""Streamed inference: the same probabilities as the whole-volume path, with memory bounded by a batch."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import torch

from sfda.config.card import ModelCard, Network, Slicing
from sfda.data.normalize import normalize_volume
from sfda.data.slices import from_slices, padded_size, slice_shape, to_slices
from sfda.inference import predict_slices, stream_volume
from sfda.nets import build_net

SLICING = Slicing(axis=0, pad_multiple=8)


def _net(classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("unet", in_channels=1, num_classes=classes, width=4, depth=2).eval()


def _whole_volume(model, slicing, array):
    """The pre-streaming computation: normalise all, slice all, predict all, stack all."""
    img = normalize_volume(array, 0.5, 99.5)
    axis = slicing.axis
    hw = tuple(padded_size(s, slicing.pad_multiple) for s in slice_shape(img.shape, axis))
    slices = np.ascontiguousarray(to_slices(img, axis, hw, fill=float(img.min()))[:, None])
    _, p = predict_slices(model, slices, probabilities=True)
    return np.stack([from_slices(p[:, k], axis, img.shape) for k in range(p.shape[1])])


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("order", ["C", "F"])
def test_streamed_volume_matches_the_whole_volume_path(axis, order):
    array = np.asarray(np.random.default_rng(axis).gamma(2.0, 40.0, size=(7, 13, 10)), order=order)
    array = array.astype(np.int16 if order == "F" else np.float32)  # stored types are kept as they are
    meta = replace(SLICING, axis=axis)
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
        stream_volume(model, SLICING, array, "scan", batch_size=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * array.nbytes, f"peak {peak / 2**20:.1f} MiB for a {array.nbytes / 2**20:.1f} MiB volume"


def test_resampled_slices_go_back_to_the_scans_own_grid():
    """A checkpoint trained on 16x16 slices: a 30x22 scan is predicted on that grid and its
    probabilities come back to 30x22 (still a distribution) before the argmax."""
    from sfda.data.resample import resize

    array = np.random.default_rng(3).gamma(2.0, 40.0, size=(5, 30, 22)).astype(np.float32)
    meta = replace(SLICING, size=(16, 16))
    model = _net()
    out = stream_volume(model, meta, array, "scan", batch_size=2, probabilities=True, spacing=(3.0, 1.0, 1.5))
    assert out["labels"].shape == array.shape and out["probabilities"].shape == (3, *array.shape)
    np.testing.assert_allclose(out["probabilities"].sum(axis=0), 1, atol=1e-5)
    img = normalize_volume(array, 0.5, 99.5)
    _, p = predict_slices(model, np.ascontiguousarray(resize(img, (16, 16))[:, None]), probabilities=True)
    np.testing.assert_allclose(out["probabilities"], resize(p, (30, 22)).transpose(1, 0, 2, 3), atol=1e-5)
    assert np.array_equal(out["labels"], out["probabilities"].argmax(axis=0))


def _pointwise3d(k: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, k, kernel_size=1)


SLICING3 = Slicing(dims=3, axis=0, pad_multiple=8)


def test_a_volume_larger_than_the_training_window_is_predicted_window_by_window():
    """A pointwise 3D model gives the same probabilities whole or through MONAI's sliding window."""
    pytest.importorskip("monai")
    array = np.random.default_rng(1).gamma(2.0, 40.0, size=(10, 30, 22)).astype(np.float32)
    model = _pointwise3d()
    whole = stream_volume(model, SLICING3, array, "scan", probabilities=True, entropy=True)
    windowed = stream_volume(model, replace(SLICING3, window=(8, 16, 16)), array, "scan", probabilities=True)
    assert whole["labels"].shape == array.shape and whole["probabilities"].shape == (3, *array.shape)
    np.testing.assert_allclose(windowed["probabilities"], whole["probabilities"], atol=1e-5)
    np.testing.assert_allclose(whole["probabilities"].sum(axis=0), 1, atol=1e-5)
    assert whole["entropy"].shape == array.shape


def test_a_3d_model_on_a_resampled_grid_comes_back_to_the_scans_own_voxels():
    array = np.random.default_rng(2).gamma(2.0, 40.0, size=(7, 30, 22)).astype(np.float32)
    meta = replace(SLICING3, size=(4, 16, 16))
    out = stream_volume(_pointwise3d(), meta, array, "scan", probabilities=True)
    assert out["labels"].shape == array.shape
    np.testing.assert_allclose(out["probabilities"].sum(axis=0), 1, atol=1e-5)


@pytest.mark.parametrize("axis, shifted", [(0, 1), (2, 2)])
def test_the_mirror_test_of_volumes_mirrors_the_slices_columns(axis, shifted):
    """Slices along ``axis`` have their columns along volume axis 2 (axis 1 when slicing along 2): the
    3D mirror test flips that one. A model that shifts the image along another axis is unchanged by
    that flip (agreement 1); flipping the shifted axis would break it."""
    from sfda.inference import trust_signals

    kernel = [1, 1, 1]
    kernel[shifted] = 3
    conv = torch.nn.Conv3d(1, 2, kernel_size=kernel, padding=[k // 2 for k in kernel], bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        centre = [0 if i == shifted else k // 2 for i, k in enumerate(kernel)]
        conv.weight[(1, 0, *centre)] = 1.0  # foreground: the image shifted along ``shifted``
    images = np.random.default_rng(0).normal(size=(2, 1, 6, 8, 10)).astype(np.float32)
    valid = np.ones((2, 6, 8, 10), bool)
    signals = trust_signals(conv, images, valid, ModelCard(network=Network("conv"), slicing=Slicing(dims=3, axis=axis)),
                            2)
    assert signals["flip_agreement"][0] == pytest.approx(1.0)
    assert len(signals["fractions"]) == 1 and signals["pixels"] == valid.sum()

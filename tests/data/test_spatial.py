"""Spatial augmentation: image, labels and valid mask move together, exactly; only allowed axes mirror."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfda.config import SpatialConfig
from sfda.data.spatial import SpatialAugment, SpatialDraw, apply_spatial, check_spatial
from sfda.errors import SfdaError


def _sample(seed: int = 0, hw=(8, 8)):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, *hw, generator=g)
    labels = torch.randint(0, 3, hw, generator=g)
    mask = torch.ones(hw, dtype=torch.bool)
    mask[:, -2:] = False  # padding on the right
    return image, labels, mask


def test_a_quarter_turn_moves_image_labels_and_mask_as_numpy_rot90():
    image, labels, mask = _sample()
    out = apply_spatial(image, labels, mask, SpatialDraw(angles=(math.pi / 2,)), SpatialConfig())
    turn = lambda a: np.rot90(np.asarray(a), -1, axes=(-2, -1))  # MONAI's positive angle
    assert np.allclose(out[0].numpy(), turn(image), atol=1e-4)
    assert np.array_equal(out[1].numpy(), turn(labels)) and out[1].dtype == torch.int64
    assert np.array_equal(out[2].numpy(), turn(mask)) and out[2].dtype == torch.bool


def test_a_flip_moves_all_three_as_numpy_flip():
    image, labels, mask = _sample(1)
    out = apply_spatial(image, labels, mask, SpatialDraw(flips=(1,)), SpatialConfig())
    assert torch.equal(out[0], image.flip(2)) and np.array_equal(out[1].numpy(), np.flip(labels.numpy(), 1))
    assert np.array_equal(out[2].numpy(), np.flip(mask.numpy(), 1))


def _batch(n: int = 16):
    g = torch.Generator().manual_seed(4)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n, 8, 8), generator=g), torch.ones(n, 8, 8, dtype=bool)


def test_mirroring_only_along_allowed_axes():
    images, labels, mask = _batch()
    t = SpatialAugment(SpatialConfig(mirror_axes=[0]))
    draws = t.draw(200, torch.Generator().manual_seed(0))
    assert {d.flips for d in draws} == {(), (0,)}  # axis 1 (columns) never
    out = t(images, labels, mask, torch.Generator().manual_seed(1))
    for i in range(len(images)):  # each sample is itself or its up-down mirror, labels alike
        same, flipped = torch.equal(out[0][i], images[i]), torch.equal(out[0][i], images[i].flip(1))
        assert same or flipped
        assert torch.equal(out[1][i], labels[i] if same else labels[i].flip(0))
    assert all(d.flips == () for d in SpatialAugment(SpatialConfig()).draw(50, torch.Generator().manual_seed(0)))


def test_same_generator_same_batch_and_labels_follow_the_image():
    images, labels, mask = _batch()
    cfg = SpatialConfig(rotate=0.5, rotate_deg=30, scale=0.5, elastic=0.5, elastic_spacing=4,
                        elastic_magnitude=[0.5, 1.0], mirror_axes=[0, 1])
    a = SpatialAugment(cfg)(images, labels, mask, torch.Generator().manual_seed(2))
    b = SpatialAugment(cfg)(images, labels, mask, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], images)
    # an image that is its own labels stays its own labels wherever nearest and bilinear agree
    lab_img = labels[:, None].float()
    img, lab, _ = SpatialAugment(cfg)(lab_img, labels, mask, torch.Generator().manual_seed(2))
    whole = (img[:, 0] == img[:, 0].round())
    assert torch.equal(img[:, 0][whole].long(), lab[whole]) and set(lab.unique().tolist()) <= {0, 1, 2}


def test_nothing_drawn_leaves_the_batch_untouched():
    images, labels, mask = _batch(4)
    out = SpatialAugment(SpatialConfig())(images, labels, mask, torch.Generator().manual_seed(0))
    assert out[0] is images and out[1] is labels and out[2] is mask


@pytest.mark.parametrize("cfg, dims, words", [
    (SpatialConfig(scale_range=[1.2, 0.8]), 2, "scale_range"),
    (SpatialConfig(elastic=0.5), 3, "2D slices"),
    (SpatialConfig(mirror_axes=[2]), 2, "axes 0..1"),
])
def test_settings_refused_with_the_reason(cfg, dims, words):
    with pytest.raises(SfdaError, match=words):
        check_spatial(cfg, dims)

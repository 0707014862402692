"""Random patches of volumes (sfda.data.patches): image, labels and valid mask cut at one corner,
inside the volume's own voxels, the overhang of a short volume padded and masked out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfda.config.card import ModelCard, Network, Slicing
from sfda.data.patches import RandomPatches, model_patch


def _batch(shape=(2, 10, 12, 6), box=(slice(2, 9), slice(1, 12), slice(0, 6))):
    n = shape[0]
    images = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(n, 1, *shape[1:])
    labels = (torch.arange(int(np.prod(shape))).reshape(shape) % 3)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[(slice(None), *box)] = True
    return images, labels, mask


def _find(volume: torch.Tensor, patch: torch.Tensor) -> tuple[int, ...]:
    """Where ``patch`` (values unique in ``volume``) was cut from."""
    first = torch.nonzero(volume == patch.flatten()[0])[0]
    return tuple(int(v) for v in first)


def test_image_labels_and_mask_are_cut_at_the_same_place_inside_the_volume():
    images, labels, mask = _batch()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        im, lab, held = RandomPatches((4, 5, 3))(images, labels, mask, gen)
        assert im.shape == (2, 1, 4, 5, 3) and lab.shape == held.shape == (2, 4, 5, 3)
        for i in range(2):
            c = _find(images[i, 0], im[i, 0])
            window = tuple(slice(a, a + n) for a, n in zip(c, (4, 5, 3)))
            assert torch.equal(im[i, 0], images[i, 0][window]) and torch.equal(lab[i], labels[i][window])
            assert held[i].all()  # inside the valid box: never the padding around the volume
            assert 2 <= c[0] <= 9 - 4 and 1 <= c[1] <= 12 - 5


def test_every_position_inside_the_box_is_drawn():
    images, labels, mask = _batch(shape=(1, 6, 4, 4), box=(slice(0, 6), slice(0, 4), slice(0, 4)))
    gen, seen = torch.Generator().manual_seed(1), set()
    for _ in range(200):
        seen.add(RandomPatches((3, 4, 4)).corner(mask[0], gen))
    assert seen == {(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0)}


def test_a_volume_shorter_than_the_patch_is_centred_and_its_overhang_masked_out():
    images, labels, mask = _batch(shape=(1, 10, 12, 6), box=(slice(2, 9), slice(0, 12), slice(0, 6)))
    im, lab, held = RandomPatches((10, 12, 8))(images, labels, mask, torch.Generator().manual_seed(0))
    # along the first axis the box (7 voxels) is centred: corner 2 - 2 = 0; the last axis (6 of 8)
    # overhangs one voxel on each side, zeros outside the array and masked out
    assert torch.equal(im[0, 0, :, :, 1:7], images[0, 0]) and (im[0, 0, :, :, [0, 7]] == 0).all()
    assert torch.equal(held[0, :, :, 1:7], mask[0]) and not held[0, :, :, [0, 7]].any()
    assert torch.equal(lab[0, :, :, 1:7], labels[0]) and (lab[0, :, :, [0, 7]] == 0).all()


def test_the_draws_repeat_with_the_generator():
    images, labels, mask = _batch()
    a = RandomPatches((4, 5, 3))(images, labels, mask, torch.Generator().manual_seed(3))[0]
    b = RandomPatches((4, 5, 3))(images, labels, mask, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("axes,expected", [([2, 1, 0], (48, 40, 12)), ([0, 2, 1], (12, 48, 40))])
def test_the_model_patch_is_the_plans_patch_in_sfdas_axes(axes, expected):
    net = Network("nnunet.PlainConvUNet", {"patch_size": [12, 40, 48], "axes": axes})
    assert model_patch(ModelCard(network=net, slicing=Slicing(dims=3))) == expected
    assert model_patch(ModelCard(network=net, slicing=Slicing(dims=2))) is None  # a 2D model sees slices
    assert model_patch(ModelCard(network=Network("unet", {}), slicing=Slicing(dims=3))) is None

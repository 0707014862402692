"""Source-side intensity augmentation: the optional contrast-flip and random-curve changes."""

from __future__ import annotations

import torch

from sfda.data.transforms import _piecewise, augment_intensity


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_piecewise_curve_through_identity_and_reversed_knots():
    x = torch.linspace(0, 1, 11).view(1, 1, 1, 11).repeat(2, 1, 1, 1)
    knots = torch.tensor([[0, 0.25, 0.5, 0.75, 1.0], [1.0, 0.75, 0.5, 0.25, 0]])
    y = _piecewise(x, knots)
    assert torch.allclose(y[0], x[0], atol=1e-6)
    assert torch.allclose(y[1], 1 - x[1], atol=1e-6)


def test_piecewise_hits_the_knots_and_interpolates_between():
    knots = torch.tensor([[0.2, 0.9, 0.1, 0.6, 0.4]])
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.125]).view(1, 1, 1, 6)
    y = _piecewise(x, knots).flatten()
    assert torch.allclose(y, torch.tensor([0.2, 0.9, 0.1, 0.6, 0.4, 0.55]), atol=1e-6)


def test_invert_mirrors_every_image_and_keeps_its_range():
    x = _images()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain, flipped = augment_intensity(x, gen(), invert=0.0), augment_intensity(x, gen(), invert=1.0)
    # Same random contrast/shift for both: the flipped image is the plain one mirrored within its range.
    lo, hi = plain.amin(dim=(1, 2, 3), keepdim=True), plain.amax(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(flipped, lo + hi - plain, atol=1e-5)
    corr = [torch.corrcoef(torch.stack([x[i].flatten(), flipped[i].flatten()]))[0, 1] for i in range(len(x))]
    assert all(c < 0 for c in corr)


def test_same_generator_same_result_and_no_nan():
    x = _images(1)
    a = augment_intensity(x, torch.Generator().manual_seed(5), invert=0.5, remap=0.5)
    b = augment_intensity(x, torch.Generator().manual_seed(5), invert=0.5, remap=0.5)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, augment_intensity(x, torch.Generator().manual_seed(6), invert=0.5, remap=0.5))

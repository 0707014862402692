"""Transforms of training batches (source side only), in normalised space.

A batch transform maps ``(images, labels, mask, gen)`` to ``(images, labels, mask)``: images
(N, C, H, W) float (or (N, C, D, H, W): every draw is per image), labels (N, H, W) int64 or None,
mask (N, H, W) bool (True on real pixels). Intensity transforms change the images only; spatial
ones (:mod:`sfda.data.spatial`) move all three together. Every random draw comes from the
generator the caller passes, so a run's batches repeat exactly under the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Chain:
    """Batch transforms applied in order (each draws from the same generator, in turn)."""

    transforms: tuple[Callable, ...]

    def __call__(self, images: torch.Tensor, labels, mask: torch.Tensor, gen: torch.Generator) -> tuple:
        for t in self.transforms:
            images, labels, mask = t(images, labels, mask, gen)
        return images, labels, mask


@dataclass(frozen=True)
class IntensityAugment:
    """Random per-image contrast, brightness and gamma; optionally ``remap`` and ``invert``
    (probabilities) for shape over contrast, see :func:`augment_intensity`."""

    invert: float = 0.0
    remap: float = 0.0

    def __call__(self, images: torch.Tensor, labels, mask: torch.Tensor, gen: torch.Generator) -> tuple:
        return augment_intensity(images, gen, self.invert, self.remap), labels, mask


def augment_intensity(x: torch.Tensor, gen: torch.Generator, invert: float = 0.0, remap: float = 0.0) -> torch.Tensor:
    """Random per-image contrast, brightness and gamma in normalised space (source side only).

    Two stronger, optional changes make the network recognise the structure by its shape
    rather than its contrast, so a model shared with another site survives a change of MRI
    contrast (a source-side change any user can make before sharing the model):
    ``remap``, the probability of passing an image through a random piecewise-linear intensity
    curve (5 knots, not necessarily monotone), and ``invert``, the probability of mirroring
    its intensities (dark <-> bright).
    """
    n, ones = x.shape[0], [1] * (x.ndim - 1)
    scale = 0.7 + 0.6 * torch.rand(n, *ones, generator=gen)
    shift = 0.4 * (torch.rand(n, *ones, generator=gen) - 0.5)
    gamma = torch.exp(0.6 * (torch.rand(n, *ones, generator=gen) - 0.5))
    flip = torch.rand(n, *ones, generator=gen) < invert
    curve = torch.rand(n, *ones, generator=gen) < remap
    knots = torch.rand(n, 5, generator=gen)
    lo = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
    hi = x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)
    unit = ((x - lo) / (hi - lo).clamp_min(1e-6)) ** gamma.to(x.device)
    if remap > 0:
        unit = torch.where(curve.to(x.device), _piecewise(unit, knots.to(x.device)), unit)
    unit = torch.where(flip.to(x.device), 1 - unit, unit)
    x = unit * (hi - lo) + lo
    return x * scale.to(x.device) + shift.to(x.device)


def _piecewise(unit: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] intensities (N, C, H, W) through per-image curves through ``knots`` (N, K)
    placed at evenly spaced inputs."""
    k = knots.shape[1]
    pos = unit.clamp(0, 1) * (k - 1)
    left = pos.floor().clamp(max=k - 2).long()
    frac = pos - left
    flat = left.flatten(1)
    y0 = knots.gather(1, flat).view_as(unit)
    y1 = knots.gather(1, flat + 1).view_as(unit)
    return y0 + (y1 - y0) * frac

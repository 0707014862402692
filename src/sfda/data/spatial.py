"""Random spatial changes of training samples with MONAI's transforms, moving each image, its
labels and its valid mask together (supervised training only; adaptation never sees them).

As TorchIO's random transforms: :meth:`SpatialAugment.draw` samples each sample's parameters
from the loop's generator first (:class:`SpatialDraw`), then :func:`apply_spatial` applies them
deterministically: rotation and scaling in one MONAI ``Affine`` (images bilinear, labels and
mask nearest, outside the image: padding, masked out), a 2D elastic deformation
(``Rand2DElastic``, its random state seeded from the draw), then flips along the allowed axes.
A sample drawn with nothing to do is returned untouched (no resampling). Shapes as in
:mod:`sfda.data.transforms`; ``import monai`` happens on the first change, not at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sfda.config import SpatialConfig
from sfda.errors import SfdaError


@dataclass(frozen=True)
class SpatialDraw:
    """One sample's change: rotation angles (radians; one in 2D, three in 3D) or None, a scale
    factor or None, the elastic deformation's seed or None, the spatial axes to flip."""

    angles: tuple[float, ...] | None = None
    scale: float | None = None
    elastic_seed: int | None = None
    flips: tuple[int, ...] = ()

    def resamples(self) -> bool:
        return self.angles is not None or self.scale is not None or self.elastic_seed is not None


def check_spatial(s: SpatialConfig, dims: int, where: str = "spatial") -> None:
    """What the options' own limits cannot say, before anything runs."""
    for name in ("scale_range", "elastic_magnitude"):
        lo_hi = getattr(s, name)
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise SfdaError(f"{where}.{name} must be two numbers [low, high] with low <= high, got {lo_hi}")
    if s.elastic > 0 and dims != 2:
        raise SfdaError(f"{where}.elastic is for 2D slices (MONAI Rand2DElastic); with slicing.dims {dims} "
                        f"set {where}.elastic 0")
    if any(a >= dims for a in s.mirror_axes):
        raise SfdaError(f"{where}.mirror_axes {s.mirror_axes}: a {dims}D sample has axes 0..{dims - 1}")


def spatial_active(s: SpatialConfig) -> bool:
    return bool(s.rotate or s.scale or s.elastic or s.mirror_axes)


@dataclass(frozen=True)
class SpatialAugment:
    """The batch transform of :class:`sfda.config.SpatialConfig` for ``dims``-D samples."""

    cfg: SpatialConfig
    dims: int = 2

    def draw(self, n: int, gen: torch.Generator) -> list[SpatialDraw]:
        """``n`` samples' draws; the same count of numbers per sample whatever is chosen."""
        c, k = self.cfg, 1 if self.dims == 2 else 3
        out = []
        for _ in range(n):
            u = torch.rand(3 + k + 1 + 3, generator=gen).tolist()
            seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
            angles = tuple(math.radians(c.rotate_deg * (2 * v - 1)) for v in u[3:3 + k])
            lo, hi = c.scale_range
            flips = tuple(a for a, v in zip(sorted(set(c.mirror_axes)), u[4 + k:]) if v < 0.5)
            out.append(SpatialDraw(angles=angles if u[0] < c.rotate else None,
                                   scale=lo + (hi - lo) * u[3 + k] if u[1] < c.scale else None,
                                   elastic_seed=seed if u[2] < c.elastic else None, flips=flips))
        return out

    def __call__(self, images: torch.Tensor, labels, mask: torch.Tensor, gen: torch.Generator) -> tuple:
        draws = self.draw(len(images), gen)
        if not any(d.resamples() or d.flips for d in draws):
            return images, labels, mask
        parts = [apply_spatial(images[i], None if labels is None else labels[i], mask[i], d, self.cfg)
                 for i, d in enumerate(draws)]
        return (torch.stack([p[0] for p in parts]), None if labels is None else torch.stack([p[1] for p in parts]),
                torch.stack([p[2] for p in parts]))


def apply_spatial(image: torch.Tensor, labels, mask: torch.Tensor, d: SpatialDraw, cfg: SpatialConfig) -> tuple:
    """One sample's change: image (C, *S) float, labels (*S) int64 or None, mask (*S) bool."""
    if d.resamples():
        maps = torch.stack([mask.float()] + ([] if labels is None else [labels.float()]))
        image, maps = _resample(image, d, cfg, "bilinear"), _resample(maps, d, cfg, "nearest")
        mask = maps[0] > 0.5
        labels = None if labels is None else maps[1].round().long()
    if d.flips:  # the image has its channel axis first
        axes = list(d.flips)
        image, mask = image.flip([a + 1 for a in axes]), mask.flip(axes)
        labels = None if labels is None else labels.flip(axes)
    return image, labels, mask


def _resample(x: torch.Tensor, d: SpatialDraw, cfg: SpatialConfig, mode: str) -> torch.Tensor:
    """``x`` (C, *S) through the draw's affine and elastic changes, with ``mode`` interpolation."""
    from monai.transforms import Affine, Rand2DElastic

    if d.angles is not None or d.scale is not None:
        spatial = x.ndim - 1
        rotate = None if d.angles is None else (d.angles[0] if spatial == 2 else d.angles)
        scale = None if d.scale is None else (d.scale,) * spatial
        x = _plain(Affine(rotate_params=rotate, scale_params=scale, padding_mode="zeros", image_only=True,
                          device=x.device)(x, mode=mode))
    if d.elastic_seed is not None:
        elastic = Rand2DElastic(spacing=cfg.elastic_spacing, magnitude_range=tuple(cfg.elastic_magnitude), prob=1.0,
                                padding_mode="zeros", device=x.device)
        elastic.set_random_state(seed=d.elastic_seed)  # the same field for the image and its labels
        x = _plain(elastic(x, mode=mode))
    return x


def _plain(x) -> torch.Tensor:
    """MONAI returns a MetaTensor; the loop works with plain tensors."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)

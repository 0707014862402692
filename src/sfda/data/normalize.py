"""Per-volume intensity normalisation: percentile clip, then z-score.

The parameters (percentiles) are stored in every checkpoint so that
prediction repeats exactly what training saw; the statistics themselves are
recomputed on each volume, which is what makes the scheme scanner-agnostic.

Memory is bounded by the work, not the file: the statistics are gathered over
slabs of the volume in its stored type (float64 accumulators), and
:func:`apply_norm` turns one slab at a time into float32. The only whole-volume
temporary is the float32 copy the exact percentiles need. Training
(:func:`normalize_volume`) and streamed prediction use the same two functions,
so they see bit-identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sfda.errors import SfdaError
from sfda.io.slabs import iter_slabs, refuse_non_finite


@dataclass(frozen=True)
class NormStats:
    """What normalising one volume needs: the clip range and the clipped volume's mean and std,
    as float32 (the arithmetic :func:`apply_norm` does)."""

    lo: np.float32
    hi: np.float32
    mean: np.float32
    std: np.float32

    @property
    def floor(self) -> float:
        """The normalised lowest clipped intensity: what slices are padded with."""
        return float(apply_norm(np.array([self.lo], dtype=np.float32), self)[0])


def intensity_stats(array: np.ndarray, clip_low: float = 0.5, clip_high: float = 99.5,
                    source: str = "volume") -> NormStats:
    """Exact percentiles (one float32 copy), then the clipped mean and std over slabs in float64
    (two passes: no cancellation, so a constant volume is refused exactly)."""
    refuse_non_finite(array, source)
    flat = np.array(array, dtype=np.float32, order="K").ravel(order="K")  # a view: one copy, in any memory order
    lo, hi = (np.float32(v) for v in np.percentile(flat, [clip_low, clip_high], overwrite_input=True))
    del flat
    n = max(array.size, 1)
    mean = sum(_clipped(s, lo, hi).sum() for s in iter_slabs(array)) / n
    var = sum(np.square(_clipped(s, lo, hi) - mean).sum() for s in iter_slabs(array)) / n
    std = float(np.sqrt(var))
    if std < 1e-8:
        raise SfdaError(f"{source} has constant intensity ({float(lo):g}) after clipping, "
                        "so it cannot be normalised: check that the file holds an image")
    return NormStats(lo, hi, np.float32(mean), np.float32(std))


def volume_stats(array: np.ndarray, clip: tuple, source: str = "volume") -> NormStats:
    """``clip`` (low, high): percentiles, the statistics taken on this volume (:func:`intensity_stats`);
    (lo, hi, mean, std): fixed intensities and statistics, the same for every volume (nnU-Net's CT
    scheme: clip to the training set's foreground percentiles, then its foreground mean and std)."""
    if len(clip) == 4:
        refuse_non_finite(array, source)
        return NormStats(*(np.float32(v) for v in clip))
    return intensity_stats(array, clip[0], clip[1], source)


def _clipped(part: np.ndarray, lo: np.float32, hi: np.float32) -> np.ndarray:
    return np.clip(part.astype(np.float32), lo, hi).astype(np.float64)


def apply_norm(part: np.ndarray, stats: NormStats) -> np.ndarray:
    """Clip and z-score any part of the volume the stats were taken on; returns float32."""
    clipped = np.clip(part.astype(np.float32, copy=False), stats.lo, stats.hi)
    clipped -= stats.mean
    clipped /= stats.std
    return clipped


def normalize_volume(array: np.ndarray, clip_low: float = 0.5, clip_high: float = 99.5,
                     source: str = "volume") -> np.ndarray:
    """Clip to the [clip_low, clip_high] percentiles and z-score; returns float32."""
    stats = intensity_stats(array, clip_low, clip_high, source)
    return apply_norm(array, stats)


"""Per-volume intensity normalisation: percentile clip, then z-score.

The parameters (percentiles) are stored in every checkpoint so that
prediction repeats exactly what training saw; the statistics themselves are
recomputed on each volume, which is what makes the scheme scanner-agnostic.
"""

from __future__ import annotations

import numpy as np

from sfda.errors import SfdaError


def normalize_volume(array: np.ndarray, clip_low: float = 0.5, clip_high: float = 99.5,
                     source: str = "volume") -> np.ndarray:
    """Clip to the [clip_low, clip_high] percentiles and z-score; returns float32."""
    if not np.all(np.isfinite(array)):
        raise SfdaError(f"{source} contains NaN/inf voxels; fix or mask them before use")
    lo, hi = np.percentile(array, [clip_low, clip_high])
    clipped = np.clip(array.astype(np.float32), lo, hi)
    std = float(clipped.std())
    if std < 1e-8:
        raise SfdaError(f"{source} has constant intensity ({float(lo):g}) after clipping, "
                        "so it cannot be normalised: check that the file holds an image")
    return ((clipped - clipped.mean()) / std).astype(np.float32)


def norm_params(clip_low: float, clip_high: float) -> dict:
    return {"method": "percentile-zscore", "clip_low": clip_low, "clip_high": clip_high}

"""Surface distances: Hausdorff (hd), 95th-percentile Hausdorff (hd95) and ASSD.

Definitions, chosen to match MONAI so that numbers are comparable with the
literature:

* Surface voxels of a mask are ``mask & ~binary_erosion(mask)`` with the
  connectivity-1 structuring element (6-neighbourhood in 3D, 4 in 2D, as
  ``scipy.ndimage.generate_binary_structure(ndim, 1)``; this is also scipy's and
  MONAI's default).  The mask is zero-padded before eroding, so voxels on the
  border of the array count as surface.
* Distances from the surface of one mask to the surface of the other are read
  from ``distance_transform_edt(~other_surface, sampling=spacing)``, so they are
  in the units of ``spacing`` (millimetres when ``spacing`` is the voxel spacing
  in mm; pass ones for voxels).
* ``hd`` is the larger of the two directed maxima; ``hd95`` is the larger of the
  two directed 95th percentiles (numpy's default linear interpolation, MONAI's
  convention); ``assd`` is the mean of all distances of both directions
  concatenated.

Empty-mask rule (the one place it is written down; :func:`sfda.metrics.dice`
follows it too):

* both masks empty: dice = 1.0 and hd = hd95 = assd = 0.0 (a correct "nothing");
* exactly one mask empty: dice = 0.0 and every distance equals the diagonal of
  the volume in the same units, ``sqrt(sum((shape_i * spacing_i) ** 2))``.  That
  is the largest distance possible inside the volume, so means over subjects stay
  finite (no inf / NaN) while a missed structure is still penalised the most.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from sfda.errors import require
from sfda.metrics.overlap import as_mask, check_same_shape

DISTANCE_KEYS: tuple[str, ...] = ("hd", "hd95", "assd")


def normalise_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Return ``spacing`` as ``ndim`` positive floats (``None`` means unit spacing).

    A wrong length usually means the spacing of a 3D volume was paired with a 2D
    slice (or the axes were reordered), which would give wrong millimetres quietly.
    """
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    require(
        len(values) == ndim,
        f"spacing {tuple(spacing)} has {len(values)} values but the masks have {ndim} axes",
    )
    require(
        all(math.isfinite(s) and s > 0 for s in values),
        f"spacing {values} must be finite and positive",
    )
    return values


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the volume's diagonal: the distance given when one mask is empty."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels of ``mask`` that touch the background.

    Padding with background first makes voxels on the array border count as
    surface, whatever scipy's ``border_value`` default is.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    eroded = ndimage.binary_erosion(padded, structure=structure)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~eroded[inner]


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union.

    Every surface voxel lies inside that box, so the distances are unchanged, and
    the distance transform of a small structure in a large volume gets much cheaper.
    """
    box = ndimage.find_objects((pred | truth).astype(np.uint8))[0]
    return pred[box], truth[box]


def _directed(
    from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, ...]
) -> np.ndarray:
    """Distances from each voxel of ``from_surface`` to the nearest of ``to_surface``."""
    field = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return np.asarray(field[from_surface], dtype=float)


def _constant(value: float) -> dict[str, float]:
    """The same value for every distance (used by the empty-mask rule)."""
    return {key: float(value) for key in DISTANCE_KEYS}


def surface_distances(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = (1.0, 1.0, 1.0),
) -> dict[str, float]:
    """Return ``{"hd", "hd95", "assd"}`` between two boolean masks (2D or 3D).

    Distances are in the units of ``spacing``, one value per axis; ``None`` means
    unit spacing for any dimension (the default ``(1, 1, 1)`` only fits 3D).  See
    the module docstring for the definitions and the empty-mask rule.  Shapes must
    match and ``spacing`` must have one value per axis, else
    :class:`sfda.errors.SfdaError`.
    """
    p = as_mask(pred, "prediction")
    t = as_mask(truth, "ground truth")
    check_same_shape(p, t)
    sampling = normalise_spacing(spacing, p.ndim)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return _constant(0.0)
    if not (has_p and has_t):
        return _constant(volume_diagonal(p.shape, sampling))
    p, t = _crop_to_union(p, t)
    p_surface, t_surface = surface_voxels(p), surface_voxels(t)
    forward = _directed(p_surface, t_surface, sampling)
    backward = _directed(t_surface, p_surface, sampling)
    return {
        "hd": float(max(forward.max(), backward.max())),
        "hd95": float(max(np.percentile(forward, 95), np.percentile(backward, 95))),
        "assd": float(np.concatenate([forward, backward]).mean()),
    }

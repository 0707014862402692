"""nnU-Net's own preprocessing of a volume, for models imported from an nnU-Net result folder
(``slicing.preprocess: nnunet``), and the way its logits go back to the scan.

What nnU-Net 2.x does for a case at prediction (``DefaultPreprocessor.run_case_npy`` and
``convert_predicted_logits_to_segmentation_with_correct_shape``), repeated here:

1. crop to the bounding box of the non-zero voxels (:func:`nonzero_box`);
2. normalise the cropped volume (the card's :class:`~sfda.config.card.Normalization`);
3. resample to the configuration's spacing (:func:`resample`): the new shape is
   ``round(old spacing / new spacing x old shape)`` per axis; images with cubic splines (order 3,
   edge values beyond the border, no anti-aliasing, clipped to the input's range, as
   ``skimage.transform.resize`` does). Where the spacing (before or after) is anisotropic (largest /
   smallest > 3) and one axis is the coarse one, each plane across that axis is resampled on its own
   and the coarse axis by nearest neighbour (order 0);
4. after the network, the logits are resampled the same way back to the cropped shape with order 1
   (linear) in the plane, then softmax and argmax, and the crop is put back into a volume of
   background.

Axes may be in any order as long as shapes and spacings share it (sfda's arrays run (x, y, z),
nnU-Net's (z, y, x)): every step here is separable.

A 2D configuration's spacing names the plane only: nnU-Net keeps the scan's own spacing across the
slices (:func:`target_spacing`), so its volume is cropped to the box along every axis but resampled
in the plane alone, and the network sees the box's slices one by one. For adaptation a scan keeps
its slice count (:func:`prepare_slices`): the slices outside the box, all zero in every channel, come
back as the normalised zero.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sfda.data.normalize import apply_norm, volume_stats

#: nnU-Net's ANISO_THRESHOLD: a spacing is anisotropic when its largest / smallest exceeds it
ANISOTROPY = 3.0
#: the spline orders nnU-Net's plans give (``resampling_fn_data_kwargs`` / ``..._probabilities_kwargs``)
IMAGE_ORDER, LOGIT_ORDER = 3, 1


def nonzero_box(array: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``array``'s non-zero voxels (nnU-Net's ``crop_to_nonzero``; filling holes,
    as it does, does not change the box); the whole array when every voxel is zero."""
    box = []
    for axis in range(array.ndim):
        others = tuple(a for a in range(array.ndim) if a != axis)
        hit = np.flatnonzero(np.any(array != 0, axis=others))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, array.shape[axis]))
    return tuple(box)


def new_shape(shape, spacing, target) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(old spacing / new spacing x old shape)`` per axis."""
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target))


def coarse_axis(spacing, target) -> int | None:
    """The axis resampled on its own (nnU-Net's ``determine_do_sep_z_and_axis``, ``force_separate_z``
    None): the one coarsest axis of the first anisotropic spacing (before, else after); None when
    neither is anisotropic or no single axis is the coarsest."""
    for sp in (spacing, target):
        sp = np.asarray(sp, dtype=float)
        if sp.max() / sp.min() > ANISOTROPY:
            axes = np.flatnonzero(sp.max() / sp == 1)
            return int(axes[0]) if len(axes) == 1 else None
    return None


def resize(image: np.ndarray, shape, order: int) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False)`` on a float64
    image: scipy's spline zoom on the pixel grid (centres aligned), clipped to the input's range."""
    shape = tuple(int(v) for v in shape)
    if image.shape == shape:
        return image
    out = ndi.zoom(image, [n / o for n, o in zip(shape, image.shape)], order=order, mode="nearest", grid_mode=True)
    return np.clip(out, image.min(), image.max())


def resample(volume: np.ndarray, shape, spacing, target, order: int) -> np.ndarray:
    """``volume`` (*spatial, float) resampled to ``shape`` as nnU-Net's ``resample_data_or_seg_to_shape``
    does it (``spacing`` the volume's, ``target`` the new; see the module). Returns float64 (the
    input itself when the shape is already right)."""
    shape = tuple(int(v) for v in shape)
    if volume.shape == shape:
        return volume
    volume = volume.astype(np.float64)
    axis = coarse_axis(spacing, target)
    if axis is None:
        return resize(volume, shape, order)
    plane = tuple(n for i, n in enumerate(shape) if i != axis)
    planes = np.stack([resize(p, plane, order) for p in np.moveaxis(volume, axis, 0)], axis=axis)
    if planes.shape[axis] == shape[axis]:
        return planes
    grid = np.mgrid[tuple(slice(0, n) for n in shape)].astype(np.float64)
    for i, (o, n) in enumerate(zip(planes.shape, shape)):  # pixel centres aligned
        grid[i] = o / n * (grid[i] + 0.5) - 0.5
    return ndi.map_coordinates(planes, grid, order=0, mode="nearest")


def uncrop(cropped: np.ndarray, box: tuple[slice, ...], shape, fill) -> np.ndarray:
    """``cropped`` (lead..., *box's shape) put back at ``box`` into an array of ``shape`` (the spatial
    axes) filled with ``fill`` (a scalar, or one value per leading index)."""
    lead = cropped.shape[: cropped.ndim - len(shape)]
    out = np.empty((*lead, *shape), dtype=cropped.dtype)
    out[...] = np.reshape(fill, (*np.shape(fill), *([1] * len(shape))))
    out[(..., *box)] = cropped
    return out


def channels_box(arrays: list) -> tuple[slice, ...]:
    """The bounding box of the voxels non-zero in any channel (nnU-Net crops all channels by one mask)."""
    if len(arrays) == 1:
        return nonzero_box(arrays[0])
    mask = arrays[0] != 0
    for a in arrays[1:]:
        mask |= a != 0
    return nonzero_box(mask)


def prepare(arrays: list, clips: list, spacing, target, sources: list):
    """Steps 1-3 for one scan's channels (one volume, its ``clips`` entry and its file name per channel):
    ``(image on the network's grid (float32, (C, *grid)), the non-zero box, the normalisation statistics
    per channel)``. ``target``: the configuration's spacing (empty: the volume's own)."""
    box = channels_box(arrays)
    target = tuple(target) or tuple(spacing)
    images, stats = [], []
    for array, clip, source in zip(arrays, clips, sources):
        st = volume_stats(array[box], clip, source)
        part = apply_norm(array[box], st)
        grid = new_shape(part.shape, spacing, target)
        images.append(resample(part, grid, spacing, target, IMAGE_ORDER).astype(np.float32, copy=False))
        stats.append(st)
    return np.stack(images), box, stats


def target_spacing(spacing, configured, axis: int | None = None) -> tuple[float, ...]:
    """The spacing nnU-Net resamples a scan of ``spacing`` to: the configuration's (``configured``, three
    values), or for a 2D configuration its two in-plane values with the scan's own spacing kept along the
    slicing ``axis`` (nnU-Net's ``DefaultPreprocessor``); the scan's own when the configuration names none."""
    if not configured:
        return tuple(spacing)
    if len(configured) == len(spacing):
        return tuple(configured)
    out = list(spacing)
    for i, v in zip([i for i in range(len(spacing)) if i != axis], configured):
        out[i] = v
    return tuple(out)


def prepare_slices(arrays: list, clips: list, spacing, target, sources: list, axis: int):
    """:func:`prepare` for a 2D configuration, the scan's slice count along ``axis`` kept: the slices outside
    the non-zero box (blank in every channel) are each channel's normalised zero. Returns (C, *grid) with the
    scan's own length along ``axis``, the box and the statistics."""
    image, box, stats = prepare(arrays, clips, spacing, target, sources)
    shape = list(image.shape[1:])
    shape[axis] = arrays[0].shape[axis]
    along = tuple(box[axis] if i == axis else slice(0, n) for i, n in enumerate(image.shape[1:]))
    zeros = np.array([apply_norm(np.zeros(1), st)[0] for st in stats], dtype=np.float32)
    return uncrop(image, along, tuple(shape), zeros), box, stats


def cropped_grid(arrays: list, spacing, target) -> tuple[int, ...]:
    """The shape :func:`prepare` gives a scan's channels (their non-zero box on the configuration's grid)."""
    shape = tuple(b.stop - b.start for b in channels_box(arrays))
    return new_shape(shape, spacing, tuple(target) or tuple(spacing))

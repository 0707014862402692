"""3D samples: each case is one sample, a whole volume, normalised, resampled and padded.

With ``slicing.dims: 3`` a 3D network trains and adapts on whole volumes (an IVDM3Seg crop,
or a scan resampled to a coarse grid) instead of slices; everything downstream (the loop, the
losses, the priors, the 3D metrics) reads the same arrays with one more spatial axis.

Array contract (as :class:`sfda.data.sliceset.SliceSet`, one axis more): ``images`` float32
(N, C, D, H, W); ``labels`` int64 (N, D, H, W) or None; ``case_index`` = arange(N) (sample i is
case i); ``slice_index`` all zero. Axes stay in the volume's own order (``axis`` is not used to
slice). Volumes are resampled to ``size`` or ``spacing`` (three values, one per axis) when
given, then padded (centred) to a common shape, each side a multiple of ``pad_multiple``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sfda.config.card import Slicing
from sfda.data.nnunet_prep import prepare
from sfda.data.resample import grid_shape, grid_spacing, resize_volume
from sfda.data.cache import cache_key, cached_arrays
from sfda.data.sliceset import SliceSet, check_cases, known_boxes, read_label, read_normalised
from sfda.data.slices import pad_centre, padded_size
from sfda.errors import SfdaError
from sfda.io.cases import Case, channel_files, channels_of
from sfda.io.channels import read_channels
from sfda.progress import bar


@dataclass
class VolumeSet(SliceSet):
    dims: ClassVar[int] = 3

    @property
    def slice_ids(self) -> list[str]:
        return [f"{case.case_id}:volume" for case in self.cases]

    def label_volumes(self):
        """Each case's labels (one sample a volume)."""
        if self.labels is None:
            raise SfdaError("these volumes have no labels; label volumes need labelled cases")
        yield from self.labels

    def positions(self) -> np.ndarray:
        raise SfdaError("with slicing.dims 3 every sample is a whole volume: there are no slice positions, so the "
                        "source-position prior (and --min-presence) does not apply; use prior.method source-mean")

    def grid(self, case: Case) -> tuple[int, ...]:
        """A case's volume shape on the network's grid (before padding); with nnU-Net's preprocessing,
        its non-zero box's (sfda.data.nnunet_prep: the image is read once to find it)."""
        if self.preprocess == "nnunet":
            return self.box_grid(case)
        return grid_shape(tuple(case.shape), tuple(case.spacing), self.size, self.spacing)

    def grid_volume(self, case: Case) -> tuple[tuple[int, ...], tuple[float, ...]]:
        grid = self.grid(case)
        if self.preprocess == "nnunet":  # the configuration's spacing (nnU-Net rounds the shape, not it)
            return grid, self.target(case)
        return grid, grid_spacing(case.shape, case.spacing, grid)

    def valid_mask(self) -> np.ndarray:
        """(N, D, H, W) bool: True on the volume's voxels, False on padding."""
        out = np.zeros((len(self), *self.hw), dtype=bool)
        for c, case in enumerate(self.cases):
            out[c] = pad_centre(np.ones(self.grid(case), dtype=bool), self.hw, False)
        return out


def volume_target(grids: list[tuple[int, ...]], multiple: int) -> tuple[int, ...]:
    """The smallest padded shape that holds every volume."""
    return tuple(padded_size(max(g[i] for g in grids), multiple) for i in range(3))


def _read_case(case: Case, modality: str, shape, grid, clips, with_labels: bool, label_names: list[str]):
    """A case's (C, D, H, W) volume (one channel per image of ``modality``) and its labels."""
    channels = read_normalised(case, modality, clips)
    label = read_label(case, modality, channels[0][0].shape, label_names) if with_labels else None
    return (np.stack([pad_centre(resize_volume(image, grid), shape, stats.floor) for image, stats in channels]),
            None if label is None else pad_centre(resize_volume(label, grid, labels=True), shape, 0))


def _read_case_nnunet(case: Case, modality: str, shape, spacing, clips, with_labels: bool, label_names: list[str]):
    """As :func:`_read_case`, with nnU-Net's preprocessing (crop to the non-zero box of all channels, its
    resampling; labels cropped and resampled by nearest neighbour)."""
    files = channel_files(case, modality)
    raw = read_channels(files)[1]
    image, box, stats = prepare(raw, clips, tuple(case.spacing), spacing, files)
    label = None
    if with_labels:
        label = resize_volume(read_label(case, modality, raw[0].shape, label_names)[box], image.shape[1:], labels=True)
    padded = np.stack([pad_centre(channel, shape, st.floor) for channel, st in zip(image, stats)])
    return padded, None if label is None else pad_centre(label, shape, 0)


def _build_arrays(cases, grids, modality, shape, clips, with_labels, label_names, progress, spacing=None):
    images, labels = [], []
    for case, grid in zip(bar(cases, f"reading {modality} volumes", progress), grids):
        if spacing is not None:  # nnU-Net's preprocessing
            image, label = _read_case_nnunet(case, modality, shape, spacing, clips, with_labels, label_names)
        else:
            image, label = _read_case(case, modality, shape, grid, clips, with_labels, label_names)
        images.append(image.astype(np.float32))
        labels.append(label)
    n = len(cases)
    return (np.ascontiguousarray(np.stack(images)), np.stack(labels) if with_labels else None,
            np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64))


#: whole volumes on their own grid, padded to a multiple of 16, clipped to their 0.5-99.5 percentiles
VOLUMES = Slicing(dims=3)


def build_volumeset(cases: list[Case], modality: str, slicing: Slicing = VOLUMES, *, with_labels: bool = True,
                    label_names: list[str] | None = None, hw=None, cache_dir: str | None = None,
                    progress: bool = True) -> VolumeSet:
    """Read, normalise, resample and pad (as ``slicing`` says) every case once (``hw``: a forced
    padded shape, e.g. the target's, so source and target batches match); reuse the on-disk cache
    when it matches."""
    label_names = check_cases(cases, modality, label_names)
    axis, clips = slicing.axis, slicing.clips(len(channels_of(modality)))
    vs = VolumeSet(images=np.empty((0, 1, 0, 0, 0), np.float32), labels=None, case_index=np.empty(0, np.int64),
                   slice_index=np.empty(0, np.int64), cases=list(cases), modality=modality, axis=axis,
                   hw=(0, 0, 0), num_classes=len(label_names), size=tuple(slicing.size), spacing=tuple(slicing.spacing),
                   preprocess=slicing.preprocess)
    known_boxes(vs, clips, cache_dir)
    grids = [vs.grid(c) for c in cases]
    vs.hw = tuple(hw or volume_target(grids, slicing.pad_multiple))
    too_big = [c.case_id for c, g in zip(cases, grids) if any(n > m for n, m in zip(g, vs.hw))]
    if too_big:
        raise SfdaError(f"volume {too_big[0]} is larger than the model's input {list(vs.hw)}; resample "
                        "(slicing.size / slicing.spacing) so that every volume fits")
    key = cache_key(cases, modality, axis, vs.hw, clips, with_labels, (vs.size, vs.spacing), dims=3,
                     preprocess=vs.preprocess)
    nnunet = vs.spacing if vs.preprocess == "nnunet" else None
    vs.images, vs.labels, vs.case_index, vs.slice_index = cached_arrays(
        cache_dir, key, lambda: _build_arrays(cases, grids, modality, vs.hw, clips, with_labels, label_names, progress,
                                              nnunet))
    return vs

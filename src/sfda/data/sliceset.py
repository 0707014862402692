"""All 2D slices of a set of cases, normalised, padded and held in contiguous arrays.

Training reads batches by indexing these arrays, so no NIfTI is read per step.
Built arrays are cached on disk (``.npy``, copied into RAM on reload) keyed by
the files, their modification times and the slicing parameters.

Array contract: ``images`` float32 (N, C, H, W), C the channels of the modality (one, or
several joined by ``+``: :func:`sfda.io.cases.channels_of`); ``labels`` int64 (N, H, W) or
None; ``case_index`` int64 (N,) into ``cases``; ``slice_index`` the position of
each slice along the slicing axis of its volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from sfda.config.card import Slicing
from sfda.data.cache import cache_key, cached_arrays, cached_boxes
from sfda.data.nnunet_prep import cropped_grid, prepare_slices, target_spacing
from sfda.data.normalize import apply_norm, volume_stats
from sfda.data.resample import grid_shape, grid_spacing, in_plane, resize
from sfda.data.slices import assemble_subject, common_target, crop_centre, from_slices, relative_positions, to_slices
from sfda.errors import SfdaError
from sfda.io.cases import Case, channel_files, channels_of, check_case_files, missing_channels
from sfda.io.channels import read_channels
from sfda.io.layouts import check_label_array
from sfda.io.volume import read_volume
from sfda.progress import bar


@dataclass
class SliceSet:
    images: np.ndarray
    labels: np.ndarray | None
    case_index: np.ndarray
    slice_index: np.ndarray
    cases: list[Case]
    modality: str
    axis: int
    hw: tuple[int, int]
    num_classes: int = 2
    # in-plane resampling (sfda.data.resample): a fixed slice size, or a pixel spacing in mm
    size: tuple = ()
    spacing: tuple = ()
    #: "" or "nnunet": how volumes reach the grid (sfda.config.card.Slicing.preprocess)
    preprocess: str = ""
    _grids: dict = field(default_factory=dict, repr=False)
    #: the samples' spatial dimensions: 2 here (slices); 3 for :class:`sfda.data.volumeset.VolumeSet`
    dims: ClassVar[int] = 2

    def __len__(self) -> int:
        return len(self.images)

    @property
    def slice_ids(self) -> list[str]:
        if not self.cases:
            return [f"slice:{s}" for s in self.slice_index]
        return [f"{self.cases[c].case_id}:{s}" for c, s in zip(self.case_index, self.slice_index)]

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray | None = None, num_classes: int = 2) -> "SliceSet":
        """Slices a user already has in memory, (N, C, H, W); no case geometry."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4:
            raise SfdaError(f"images must be (N, C, H, W), got shape {images.shape}")
        n = len(images)
        return cls(images=images, labels=labels, case_index=np.zeros(n, dtype=np.int64),
                   slice_index=np.arange(n, dtype=np.int64), cases=[], modality="", axis=0,
                   hw=tuple(images.shape[2:]), num_classes=num_classes)

    def subjects(self) -> list[str]:
        return sorted({c.subject for c in self.cases})

    def foreground_fractions(self) -> np.ndarray:
        """Per-slice class ratios (N, K) from the labels, counted inside the unpadded area."""
        if self.labels is None:
            raise SfdaError("these slices have no labels; class ratios need labelled cases")
        return label_ratios(self.labels, self.valid_mask(), self.num_classes)

    def label_volumes(self):
        """Each case's labels as a volume (its slices stacked in order, on the network's grid)."""
        if self.labels is None:
            raise SfdaError("these slices have no labels; label volumes need labelled cases")
        for c in range(len(self.cases)):
            rows = np.flatnonzero(self.case_index == c)
            if len(rows):
                yield self.labels[rows[np.argsort(self.slice_index[rows], kind="stable")]]

    def positions(self) -> np.ndarray:
        """Each slice's place along its volume's slicing axis, from 0 (first) to 1 (last)."""
        return relative_positions(self.slice_index, np.array([c.shape[self.axis] for c in self.cases])[self.case_index])

    def grid(self, case: Case) -> tuple[int, int]:
        """A case's slice size on the network's grid (before padding)."""
        if self.preprocess == "nnunet":
            return in_plane(self.box_grid(case), self.axis)
        return grid_shape(in_plane(case.shape, self.axis), in_plane(case.spacing, self.axis), self.size, self.spacing)

    def target(self, case: Case) -> tuple[float, ...]:
        """The voxel spacing nnU-Net's preprocessing resamples ``case`` to (sfda.data.nnunet_prep)."""
        return target_spacing(tuple(case.spacing), self.spacing, None if self.dims == 3 else self.axis)

    def box_grid(self, case: Case) -> tuple[int, ...]:
        """With nnU-Net's preprocessing, a case's non-zero box on the configuration's grid (the image is read
        once to find it; sfda.data.nnunet_prep)."""
        if case.case_id not in self._grids:
            images = read_channels(channel_files(case, self.modality))[1]
            self._grids[case.case_id] = cropped_grid(images, tuple(case.spacing), self.target(case))
        return self._grids[case.case_id]

    def grid_volume(self, case: Case) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """A case's volume shape and voxel spacing on the network's grid (the slicing axis kept)."""
        if self.preprocess == "nnunet":  # every slice kept (sfda.data.nnunet_prep.prepare_slices)
            shape = list(self.box_grid(case))
            shape[self.axis] = case.shape[self.axis]
            return tuple(shape), self.target(case)
        shape, spacing = list(case.shape), list(case.spacing)
        native, grid = in_plane(case.shape, self.axis), self.grid(case)
        planes = [i for i in range(3) if i != self.axis]
        for i, n, g, sp in zip(planes, native, grid, grid_spacing(native, in_plane(case.spacing, self.axis), grid)):
            shape[i], spacing[i] = g, sp
        return tuple(shape), tuple(spacing)

    def valid_mask(self) -> np.ndarray:
        """(N, H, W) bool: True on real voxels, False on padding (all True without cases)."""
        if not self.cases:
            return np.ones((len(self), *self.hw), dtype=bool)
        out = np.zeros((len(self), *self.hw), dtype=bool)
        for c, case in enumerate(self.cases):
            one = to_slices(np.ones((1, *self.grid(case)), dtype=bool), 0, self.hw, fill=False)[0]
            out[self.case_index == c] = one
        return out


def case_volumes(ss: SliceSet, slices: np.ndarray) -> list[np.ndarray]:
    """Per-slice maps (N, H, W) (per-volume maps (N, D, H, W) in 3D) back to one volume per case on
    the network's grid, in ``ss.cases`` order."""
    if ss.dims == 3:
        return [crop_centre(slices[c], ss.grid(case)) for c, case in enumerate(ss.cases)]
    out = []
    for c, case in enumerate(ss.cases):
        rows = ss.case_index == c
        order = np.argsort(ss.slice_index[rows])
        out.append(from_slices(slices[rows][order], ss.axis, ss.grid_volume(case)[0]))
    return out


def subject_volumes(ss: SliceSet, slices: np.ndarray) -> dict[str, np.ndarray]:
    """One 3D volume per subject (its crops assembled), for 3D metrics."""
    vols = case_volumes(ss, slices)
    by_subject: dict[str, list[np.ndarray]] = {}
    for case, vol in zip(ss.cases, vols):
        by_subject.setdefault(case.subject, []).append(vol)
    return {s: assemble_subject(v) for s, v in sorted(by_subject.items())}


def label_ratios(labels: np.ndarray, valid: np.ndarray, num_classes: int) -> np.ndarray:
    """Each sample's class ratios (N, K) over its real pixels (voxels), from (N, *spatial) labels."""
    axes = tuple(range(1, labels.ndim))
    counts = np.stack([((labels == k) & valid).sum(axis=axes) for k in range(num_classes)], axis=1)
    return (counts / np.maximum(valid.sum(axis=axes), 1)[:, None]).astype(np.float32)


def _planes(volume: np.ndarray, axis: int, grid, hw, fill, labels: bool = False) -> np.ndarray:
    """A volume's slices resampled to ``grid`` and padded (centred) to ``hw``."""
    moved = resize(np.moveaxis(volume, axis, 0), grid, labels=labels)
    return to_slices(moved, 0, hw, fill=fill)


def read_normalised(case: Case, modality: str, clips: list[tuple]) -> list:
    """A case's images of ``modality``'s channels (:func:`sfda.io.cases.channels_of`), each normalised
    with its ``clips`` entry, as ``(image, its statistics (the padding value))`` per channel."""
    files = channel_files(case, modality)
    out = []
    for array, path, clip in zip(read_channels(files)[1], files, clips):  # one grid; volume_stats checks values
        stats = volume_stats(array, clip, source=path)
        out.append((apply_norm(array, stats), stats))
    return out


def read_label(case: Case, modality: str, shape: tuple[int, ...], label_names: list[str]) -> np.ndarray:
    """A case's label volume (int64), checked against the classes and the image's ``shape``."""
    if not case.label:
        raise SfdaError(f"case {case.case_id} has no label file; this stage needs labelled cases")
    lab = read_volume(case.label, dtype=None).array
    check_label_array(lab, label_names, case.label)
    if lab.shape != tuple(shape):
        raise SfdaError(f"label {case.label} has shape {lab.shape} but image "
                        f"{channel_files(case, modality)[0]} has {tuple(shape)}; re-export the label")
    return lab.astype(np.int64)


def _read_case_nnunet(case: Case, modality: str, axis: int, hw, target, clips: list[tuple],
                      with_labels: bool, label_names: list[str]):
    """As :func:`_read_case`, with nnU-Net's preprocessing for a 2D configuration (cropped to the non-zero box
    in the plane, every slice kept: sfda.data.nnunet_prep.prepare_slices); labels by nearest neighbour."""
    files = channel_files(case, modality)
    raw = read_channels(files)[1]
    image, box, stats = prepare_slices(raw, clips, tuple(case.spacing), target, files, axis)
    slices = np.stack([to_slices(channel, axis, hw, fill=st.floor) for channel, st in zip(image, stats)], axis=1)
    if not with_labels:
        return slices, None
    plane = tuple(slice(None) if i == axis else b for i, b in enumerate(box))
    label = read_label(case, modality, raw[0].shape, label_names)[plane]
    return slices, _planes(label, axis, in_plane(image.shape[1:], axis), hw, 0, labels=True)


def _read_case(case: Case, modality: str, axis: int, hw, grid, clips: list[tuple],
               with_labels: bool, label_names: list[str]):
    """A case's (n, C, H, W) slices (one channel per image of ``modality``) and (n, H, W) labels."""
    channels = read_normalised(case, modality, clips)
    slices = np.stack([_planes(image, axis, grid, hw, stats.floor) for image, stats in channels], axis=1)
    labels = None
    if with_labels:
        labels = _planes(read_label(case, modality, channels[0][0].shape, label_names), axis, grid, hw, 0, labels=True)
    return slices, labels


#: 2D slices along axis 0, padded to a multiple of 16, each volume clipped to its 0.5-99.5 percentiles
SLICES = Slicing()


def build_sliceset(cases: list[Case], modality: str, slicing: Slicing = SLICES, *, with_labels: bool = True,
                   label_names: list[str] | None = None, hw: tuple[int, int] | None = None,
                   cache_dir: str | None = None, progress: bool = True) -> SliceSet:
    """Read, normalise (``slicing.norm``) and slice (along ``slicing.axis``, resampled to its ``size``
    or ``spacing``, padded to its ``pad_multiple`` or to ``hw``) every case once; reuse the on-disk
    cache when it matches."""
    label_names = check_cases(cases, modality, label_names)
    axis, clips = slicing.axis, slicing.clips(len(channels_of(modality)))
    shell = SliceSet(images=np.empty((0, 1, 0, 0), np.float32), labels=None, case_index=np.empty(0, np.int64),
                     slice_index=np.empty(0, np.int64), cases=list(cases), modality=modality, axis=axis, hw=(0, 0),
                     num_classes=len(label_names), size=tuple(slicing.size), spacing=tuple(slicing.spacing),
                     preprocess=slicing.preprocess)
    known_boxes(shell, clips, cache_dir)
    grids = [shell.target(c) if shell.preprocess == "nnunet" else shell.grid(c) for c in cases]
    shell.hw = tuple(hw or common_target([shell.grid_volume(c)[0] for c in cases], axis, slicing.pad_multiple))
    key = cache_key(cases, modality, axis, shell.hw, clips, with_labels, (shell.size, shell.spacing),
                    preprocess=shell.preprocess)
    read = _read_case_nnunet if shell.preprocess == "nnunet" else _read_case
    shell.images, shell.labels, shell.case_index, shell.slice_index = cached_arrays(
        cache_dir, key, lambda: _build_arrays(cases, grids, modality, axis, shell.hw, clips, with_labels,
                                              label_names, progress, read))
    return shell


def known_boxes(ss: SliceSet, clips: list[tuple], cache_dir: str | None) -> None:
    """With nnU-Net's preprocessing, fill ``ss``'s boxes from the cache (computed and stored there on a miss),
    so a set rebuilt from its cached arrays reads no image."""
    if ss.preprocess != "nnunet":
        return
    key = cache_key(ss.cases, ss.modality, ss.axis, (), clips, False, (ss.size, ss.spacing), dims=ss.dims,
                    preprocess="nnunet-boxes")
    ss._grids = cached_boxes(cache_dir, key, lambda: {c.case_id: ss.box_grid(c) for c in ss.cases})


def check_cases(cases: list[Case], modality: str, label_names: list[str] | None) -> list[str]:
    """Refuse an empty selection, a case without one of ``modality``'s channels or with missing files;
    the label names (two classes when none are given)."""
    if not cases:
        raise SfdaError("no cases selected: check --subjects and the case list")
    for c in cases:
        missing = missing_channels(modality, c.images)
        if missing:
            raise SfdaError(f"case {c.case_id} has no modality '{missing[0]}'; available: "
                            f"{', '.join(sorted(c.images))}")
        check_case_files(c)
    return label_names or ["background", "foreground"]


def _build_arrays(cases, grids, modality, axis, hw, clips, with_labels, label_names, progress, read=_read_case):
    """Every case's slices; ``grids``: each case's in-plane grid (its target spacing for ``_read_case_nnunet``)."""
    images, labels, case_index, slice_index = [], [], [], []
    for i, case in enumerate(bar(cases, f"slicing {modality}", progress)):
        img, lab = read(case, modality, axis, hw, grids[i], clips, with_labels, label_names)
        images.append(img)
        if lab is not None:
            labels.append(lab)
        case_index.append(np.full(len(img), i, dtype=np.int64))
        slice_index.append(np.arange(len(img), dtype=np.int64))
    return (np.ascontiguousarray(np.concatenate(images), dtype=np.float32),
            np.concatenate(labels) if with_labels else None,
            np.concatenate(case_index), np.concatenate(slice_index))

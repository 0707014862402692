"""What a model saw in training (voxel spacing, image size, intensity range, modality name), and
how far a new scan lies from it.

A model segments any scan it is given, and on data unlike its training data its masks can be
wrong with every label-free signal green (a spine-disc model on abdominal MR). So a checkpoint
carries the ranges of its training scans (:func:`training_profile`, stored in its card as
``profile``) and ``sfda predict`` / ``sfda evaluate`` say, per scan, which of them a scan falls far
outside (:func:`unfamiliar`). It is a warning: the scan is still segmented.
"""

from __future__ import annotations

import numpy as np

from sfda.config.card import Profile
from sfda.io.cases import Case, channel_files
from sfda.io.volume_scan import scan_volume

#: a spacing or size outside [min / FAR, max * FAR] of the training scans' is far
FAR = 2.0
#: an intensity range whose width differs from the training range's by more than this factor is far
#: (raw scanner values, before normalisation)
FAR_INTENSITY = 4.0
#: so is one that overlaps less than this share of the narrower of the two ranges
FAR_OVERLAP = 0.5


def training_profile(cases: list[Case], modality: str) -> Profile:
    """The ranges of ``cases``' ``modality`` images: spacing and shape per axis, raw intensity per channel."""
    spacing = np.array([c.spacing for c in cases], dtype=float)
    shape = np.array([c.shape for c in cases], dtype=float)
    scans = [[scan_volume(path) for path in channel_files(c, modality)] for c in cases]
    ranges = tuple((min(s[k].low for s in scans), max(s[k].high for s in scans)) for k in range(len(scans[0])))
    return Profile(modality=modality, spacing=(tuple(spacing.min(0).tolist()), tuple(spacing.max(0).tolist())),
                   shape=(tuple(shape.min(0).tolist()), tuple(shape.max(0).tolist())), intensity=ranges[0],
                   channels=ranges if len(ranges) > 1 else ())


def _outside(values, low, high) -> bool:
    return any(v < lo / FAR or v > hi * FAR for v, lo, hi in zip(values, low, high))


def _fmt(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def _far_range(low: float, high: float, lo: float, hi: float) -> bool:
    """Whether a raw range (low, high) is far from a training range (lo, hi): its width differs by more than
    :data:`FAR_INTENSITY`, or it overlaps less than :data:`FAR_OVERLAP` of the narrower."""
    width, seen = max(high - low, 1e-12), max(hi - lo, 1e-12)
    overlap = max(0.0, min(high, hi) - max(low, lo)) / min(width, seen)
    return width / seen > FAR_INTENSITY or seen / width > FAR_INTENSITY or overlap < FAR_OVERLAP


def unfamiliar(profile: Profile | None, spacing, shape, ranges: list[tuple[float, float]],
               modality: str | None = None) -> list[str]:
    """Why a scan (its spacing and shape per axis, each channel's raw (low, high), its modality name if
    known) is far from ``profile``; empty when it is not, or when the checkpoint carries no profile.
    Channels the profile holds no range for are not checked."""
    if not profile:
        return []
    why = []
    if _outside(spacing, *profile.spacing):
        why.append(f"voxel spacing {_fmt(spacing)} mm (training: {_fmt(profile.spacing[0])} to "
                   f"{_fmt(profile.spacing[1])} mm)")
    if _outside(shape, *profile.shape):
        why.append(f"size {_fmt(shape)} (training: {_fmt(profile.shape[0])} to {_fmt(profile.shape[1])})")
    several = len(ranges) > 1
    for k, ((low, high), (lo, hi)) in enumerate(zip(ranges, profile.intensities())):
        if _far_range(low, high, lo, hi):
            which = f" of channel {k}" if several else ""
            why.append(f"intensities{which} {low:g} to {high:g} (training: {lo:g} to {hi:g})")
    if modality and profile.modality and modality != profile.modality:
        why.append(f"modality '{modality}' (training: '{profile.modality}')")
    return why

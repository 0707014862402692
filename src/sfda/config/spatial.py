"""The spatial augmentation's settings (train-source's ``spatial`` section), declared once."""

from __future__ import annotations

from dataclasses import dataclass

from sfda.config.core import opt


@dataclass
class SpatialConfig:
    """Random spatial changes of each training sample (sfda.data.spatial, MONAI) moving its image,
    labels (nearest) and valid mask together; train-source only. Probabilities are per sample; the
    defaults change nothing. nnU-Net 2D: rotate 0.2 (180 deg), scale 0.2 ([0.7, 1.4]), mirror [0, 1]."""

    rotate: float = opt(0.0, low=0, high=1)
    # an angle drawn uniformly in [-rotate_deg, rotate_deg] (3D: one per axis)
    rotate_deg: float = opt(180.0, low=0, high=180)
    scale: float = opt(0.0, low=0, high=1)
    # a factor drawn uniformly in [low, high] for every axis; as nnU-Net's and MONAI's, > 1 shrinks the content
    scale_range: list[float] = opt([0.7, 1.4], above=0)
    # 2D only (MONAI Rand2DElastic): control points every elastic_spacing pixels, moved by Gaussian
    # offsets whose std (pixels) is drawn uniformly in elastic_magnitude [low, high]
    elastic: float = opt(0.0, low=0, high=1)
    elastic_spacing: float = opt(32.0, above=0)
    elastic_magnitude: list[float] = opt([0.0, 4.0], low=0)
    # the sample's axes (0: rows, 1: columns; 3D: 0-2) each mirrored with probability 0.5; never
    # list the left/right axis where organs come in pairs
    mirror_axes: list[int] = opt([], choices=(0, 1, 2))

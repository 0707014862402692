"""Segmentation metrics: Dice, surface distances (hd, hd95, assd) and their summary.

Definitions and the empty-mask rule are in :mod:`sfda.metrics.surface`.
"""

from __future__ import annotations

from sfda.metrics.accumulator import SPACING_UNITS, MetricAccumulator, case_metrics, metric_names, sample_std
from sfda.metrics.overlap import dice
from sfda.metrics.surface import surface_distances, surface_voxels, volume_diagonal

__all__ = [
    "SPACING_UNITS",
    "MetricAccumulator",
    "case_metrics",
    "dice",
    "metric_names",
    "sample_std",
    "surface_distances",
    "surface_voxels",
    "volume_diagonal",
]

"""Whether a structure's mask holds together: a label-free sign of a mask gone wrong.

A structure such as the liver, a spleen or one kidney is one piece of tissue. When a model (adapted
or not) segments it in one piece plus scattered islands elsewhere, the islands are false: the
structure's **scatter**, the share of its voxels outside its largest connected component
(26-connectivity in 3D), measures how much of the mask is such islands.

The bound, :data:`SCATTER_MAX`, was read off the abdomen development subjects (``python
bench/largest_component.py runs/abd``: the validation subjects of both directions, every method and
seed of the test run, 281 structure masks): of the masks whose scatter exceeded 0.2, 93 % had a Dice
under 0.5 against 36 % of the others. It says nothing about a structure made of several pieces (the
discs of a spine): the warning applies only to structures whose training labels are in one piece
(scatter at most :data:`ONE_PIECE` in every training volume, stored in the model card as
``source.pieces`` by ``train-source``). A model without that statistic (imported from nnU-Net, or
trained before sfda stored it) gets the figure in ``volumes.csv`` and no warning.

What it cannot see: a structure segmented in one piece at the wrong place, or too small, is not
scattered.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi

#: a structure whose training labels are in one piece, predicted with over this share of its voxels
#: outside its largest component: warned about (see the module for how it was chosen)
SCATTER_MAX = 0.2
#: training labels with at most this scatter in every volume: the structure is one piece
ONE_PIECE = 0.02


def largest_component(mask: np.ndarray) -> np.ndarray:
    """``mask`` (bool, any dimension) with only its largest fully connected component (empty stays empty)."""
    comps, n = ndi.label(mask, ndi.generate_binary_structure(mask.ndim, mask.ndim))
    if n <= 1:
        return mask.astype(bool)
    return comps == 1 + int(np.argmax(np.bincount(comps.ravel())[1:]))


def split(mask: np.ndarray) -> tuple[np.ndarray, float | None]:
    """``mask``'s largest component and the share of its voxels outside it (None for an empty mask)."""
    kept, total = largest_component(mask), int(mask.sum())
    return kept, None if total == 0 else float(1 - kept.sum() / total)


def scatter(labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Per structure 1..K-1 of an integer mask: the share of its voxels outside its largest
    component (None where the mask holds none of it)."""
    return [split(labels == c)[1] for c in range(1, num_classes)]


def label_pieces(volumes: Iterable[np.ndarray], num_classes: int) -> tuple[float | None, ...]:
    """Per structure, its largest scatter over the training label ``volumes`` (None: never present)."""
    worst: list[float | None] = [None] * (num_classes - 1)
    for vol in volumes:
        for i, s in enumerate(scatter(vol, num_classes)):
            if s is not None:
                worst[i] = s if worst[i] is None else max(worst[i], s)
    return tuple(worst)


def scattered(pred: list[float | None], pieces: tuple[float | None, ...] | None,
              names: list[str]) -> list[tuple[str, float]]:
    """(structure, scatter) for each structure of a mask whose ``pred`` scatter exceeds :data:`SCATTER_MAX`
    while its training labels (``pieces``) are in one piece; ``names``: the structures 1..K-1."""
    if not pieces:
        return []
    return [(name, s) for name, s, p in zip(names, pred, pieces)
            if s is not None and p is not None and p <= ONE_PIECE and s > SCATTER_MAX]


def scattered_line(name: str, share: float) -> str:
    return (f"{name} is scattered: {share:.0%} of its voxels lie outside its largest connected piece, while its "
            f"training labels are one piece; check this mask")

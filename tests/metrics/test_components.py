"""Scatter: the share of a structure's voxels outside its largest connected piece, on known masks."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.metrics.components import ONE_PIECE, SCATTER_MAX, label_pieces, largest_component, scatter, scattered


def test_the_largest_piece_is_kept_and_diagonal_neighbours_join_it():
    mask = np.zeros((6, 6, 6), bool)
    mask[0:3, 0:3, 0:3] = True  # 27 voxels
    mask[3, 3, 3] = True  # touches the cube's corner: one piece (26-connectivity)
    mask[5, 0, 5] = True  # alone
    kept = largest_component(mask)
    assert kept.sum() == 28 and kept[3, 3, 3] and not kept[5, 0, 5]
    assert largest_component(np.zeros((3, 3), bool)).sum() == 0


def test_scatter_of_known_masks():
    labels = np.zeros((10, 10, 10), np.int64)
    labels[0:3, 0:3, 0:3] = 1  # 27
    labels[6:9, 6:9, 6] = 1  # 9 apart: 9 / 36
    labels[5, 0, 0] = 2  # one voxel, one piece
    assert scatter(labels, 4) == [pytest.approx(0.25), 0.0, None]


def test_label_pieces_take_the_worst_volume_and_the_warning_needs_one_piece_labels():
    one, two = np.zeros((4, 4, 4), np.int64), np.zeros((4, 4, 4), np.int64)
    one[0, 0, 0] = 1
    two[0, 0, 0], two[3, 3, 3] = 1, 1
    assert label_pieces([one, two], 3) == (0.5, None)
    assert label_pieces([one], 3) == (0.0, None)
    assert 0 <= ONE_PIECE < SCATTER_MAX
    assert scattered([0.3, 0.3], (0.0, 0.5), ["a", "b"]) == [("a", 0.3)]
    assert scattered([SCATTER_MAX, None], (0.0, 0.0), ["a", "b"]) == []  # at the bound, and absent: no warning
    assert scattered([0.9], None, ["a"]) == []

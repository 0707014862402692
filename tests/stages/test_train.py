"""train-source writes last.pt and selected.pt once with their final card (the model's own flip
agreement, measured in memory before its last epoch's files are written) and reads neither back."""

from __future__ import annotations

import pytest

from pathlib import Path

import torch

from sfda.engine.checkpoint import load_checkpoint, load_model
from sfda.stages.train import train_source


def _names(paths: list, folder: Path) -> list[str]:
    return [Path(p).name for p in paths if Path(p).parent == folder]


def test_train_source_writes_each_checkpoint_once_with_its_flip_and_reads_none(tiny_train_config, tmp_path,
                                                                               file_traffic):
    writes, reads = file_traffic
    out = train_source(tiny_train_config(tmp_path / "src", "optim.epochs=2"), progress=False)
    written = _names(writes, out)
    assert written.count("last.pt") == 2 and written.count("selected.pt") == 1  # last.pt: once an epoch
    assert reads == []
    last, selected = load_checkpoint(out / "last.pt"), load_checkpoint(out / "selected.pt")
    assert last["card"].source.flip is not None and selected["card"].source.flip == last["card"].source.flip
    assert all(torch.equal(v, last["state_dict"][k]) for k, v in selected["state_dict"].items())


def test_the_flip_measured_in_memory_is_the_one_of_the_written_model(tiny_train_config, tmp_path):
    from dataclasses import replace

    from sfda.io.cases import load_cases
    from sfda.stages.common import slices_for
    from sfda.stages.train import _with_flip

    cfg = tiny_train_config(tmp_path / "src")
    out = train_source(cfg, progress=False)
    model, card = load_model(out / "last.pt")
    train = slices_for(load_cases(cfg.data.cases), cfg.data.subjects, cfg.data.modality, card.slicing,
                       with_labels=True, progress=False)
    again = _with_flip(model, replace(card, source=replace(card.source, flip=None)), train, "cpu")
    assert card.source.flip is not None and again.source.flip == card.source.flip


def test_a_finished_training_resumed_writes_the_same_selected_pt(tiny_train_config, tmp_path):
    out = train_source(tiny_train_config(tmp_path / "src"), progress=False)
    first = load_checkpoint(out / "selected.pt")
    train_source(tiny_train_config(tmp_path / "src", "resume=true"), progress=False)
    again = load_checkpoint(out / "selected.pt")
    assert again["card"].source == first["card"].source and again["card"].source.flip is not None
    assert all(torch.equal(v, first["state_dict"][k]) for k, v in again["state_dict"].items())


def test_the_card_carries_how_many_pieces_each_structure_has_in_the_training_labels(tiny_train_config, tmp_path):
    """source.pieces: per structure, the worst share of its voxels outside its largest piece over the
    training volumes (the slices stacked back), as sfda.metrics.components computes it."""
    import numpy as np

    from sfda.data.sliceset import build_sliceset
    from sfda.io.cases import load_cases
    from sfda.metrics.components import label_pieces

    cfg = tiny_train_config(tmp_path / "src", "optim.epochs=1")
    out = train_source(cfg, progress=False)
    card = load_checkpoint(out / "last.pt")["card"]
    cl = load_cases(cfg.data.cases)
    ss = build_sliceset(cl.cases if not cfg.data.subjects else [c for c in cl.cases if c.subject in cfg.data.subjects],
                        cfg.data.modality, card.slicing, label_names=list(card.labels), progress=False)
    volumes = list(ss.label_volumes())
    assert len(volumes) == len(ss.cases) and all(v.ndim == 3 for v in volumes)
    assert sum(int(v.size) for v in volumes) == int(ss.labels.size)
    assert card.source.pieces == label_pieces(volumes, len(card.labels))
    assert len(card.source.pieces) == len(card.labels) - 1 and all(0 <= p < 1 for p in card.source.pieces)
    assert np.array_equal(volumes[0][0], ss.labels[np.flatnonzero(ss.case_index == 0)[np.argmin(
        ss.slice_index[ss.case_index == 0])]])
    # source.volumes: each structure's smallest and largest volume in mL, on the network's grid
    from sfda.io.volume import read_volume

    (lo, hi), = card.source.volumes
    native = [read_volume(c.label, dtype=None) for c in ss.cases]
    ml = [float((v.array == 1).sum() * np.prod(v.spacing)) / 1000 for v in native]
    assert 0 < lo <= hi and lo == pytest.approx(min(ml), rel=0.05) and hi == pytest.approx(max(ml), rel=0.05)

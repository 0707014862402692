"""A modality that joins several channels (``wat+inn``) is read as one sample of several channels:
each channel normalised on its own, stacked in the order named; sfda's own models train on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sfda.config.card import Slicing
from sfda.data.sliceset import build_sliceset
from sfda.data.volumeset import build_volumeset
from sfda.errors import SfdaError
from sfda.io.cases import channels_of, load_cases, select_cases
from sfda.stages.predict_inputs import channel_groups


def test_channels_are_stacked_in_the_order_named(tiny_cases):
    cases = load_cases(tiny_cases).cases[:2]
    both = build_sliceset(cases, "wat+inn", progress=False)
    wat, inn = (build_sliceset(cases, m, progress=False) for m in ("wat", "inn"))
    assert both.images.shape == (len(wat), 2, *wat.hw)
    assert np.array_equal(both.images[:, 0], wat.images[:, 0]) and np.array_equal(both.images[:, 1], inn.images[:, 0])
    swapped = build_sliceset(cases, "inn+wat", progress=False)
    assert np.array_equal(swapped.images[:, 0], inn.images[:, 0])
    vols = build_volumeset(cases, "wat+inn", Slicing(dims=3), progress=False)
    one = build_volumeset(cases, "inn", Slicing(dims=3), progress=False)
    assert vols.images.shape[1] == 2 and np.array_equal(vols.images[:, 1], one.images[:, 0])


def test_a_channel_the_cases_lack_is_refused_by_name(tiny_cases):
    cl = load_cases(tiny_cases)
    with pytest.raises(SfdaError, match="unknown modality 'xyz'.*joined by '\\+'"):
        select_cases(cl, None, "wat+xyz")
    with pytest.raises(SfdaError, match="no modality 'xyz'"):
        build_sliceset(cl.cases[:1], "wat+xyz", progress=False)
    assert channels_of("wat+inn") == ["wat", "inn"] and channels_of("wat") == ["wat"]


def test_a_card_with_a_normalisation_per_channel_refuses_another_count():
    sl = Slicing(norms=(Slicing().norm, Slicing().norm))
    assert sl.clips(2) == [(0.5, 99.5)] * 2
    with pytest.raises(SfdaError, match="normalises 2 input channels; 1 were given"):
        sl.clips(1)


def test_inputs_group_per_case_by_nnunets_naming(tmp_path):
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0001.nii.gz", "b_0000.nii.gz"):
        (tmp_path / name).touch()
    files = sorted(tmp_path.iterdir())
    groups = channel_groups(files, ["T2", "ADC"])
    assert [[p.name for p in g] for g in groups] == [["a_0000.nii.gz", "a_0001.nii.gz"],
                                                     ["b_0000.nii.gz", "b_0001.nii.gz"]]
    with pytest.raises(SfdaError, match=r"channel 1 \(ADC\) is missing"):
        channel_groups([tmp_path / "a_0000.nii.gz"], ["T2", "ADC"])
    with pytest.raises(SfdaError, match="channel 2 is one too many"):
        channel_groups([*files, tmp_path / "a_0002.nii.gz"], ["T2", "ADC"])
    with pytest.raises(SfdaError, match="named as nnU-Net names them"):
        channel_groups([Path("scan.nii.gz")], ["T2", "ADC"])


def test_train_source_builds_a_network_of_as_many_channels_and_predict_reads_them(tiny_train_config, tiny_cases,
                                                                                  tmp_path):
    from sfda.engine.checkpoint import load_model
    from sfda.stages.predict import predict
    from sfda.stages.train import train_source

    train_source(tiny_train_config(tmp_path / "src", "data.modality=wat+inn"), progress=False)
    model, card = load_model(tmp_path / "src" / "last.pt")
    assert card.network.args["in_channels"] == 2 and card.modality == "wat+inn"
    masks = predict(checkpoint=str(tmp_path / "src" / "last.pt"), inputs=[tiny_cases], out=str(tmp_path / "pred"),
                    progress=False)
    assert len(masks) == 3
    from sfda.cli import main

    out = tmp_path / "adapted"
    assert main(["adapt", "--checkpoint", str(tmp_path / "src" / "last.pt"), "--method", "tent", "--cases", tiny_cases,
                 "--modality", "inn", "--out", str(out)]) == 2
    assert not out.exists()  # refused, and no folder left behind

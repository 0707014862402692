"""The model card: typed, saved as plain data with every checkpoint, read back whole; version-1
checkpoints (an untyped ``meta`` dict) load into the same card and predict as they did."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sfda.config.card import (
    ModelCard,
    Network,
    NnunetOrigin,
    Normalization,
    Profile,
    Selection,
    Slicing,
    SourceStats,
    Training,
    card_from_meta,
)
from sfda.engine.checkpoint import VERSION, load_checkpoint, load_model, save_checkpoint, update_card
from sfda.nets import build_net

OLD = Path(__file__).parents[1] / "fixtures" / "checkpoints"
ARGS = {"in_channels": 1, "num_classes": 3, "width": 4, "depth": 2}


def _full_card() -> ModelCard:
    """A card with every field set (none left at its default)."""
    return ModelCard(
        network=Network("unet", ARGS), kind="segmentation", labels=("bg", "a", "b"), modality="wat",
        slicing=Slicing(dims=2, axis=2, pad_multiple=8, size=(64, 48), spacing=(), window=(),
                        norm=Normalization.fixed_values([-100, 300, 40.5, 80.25])),
        profile=Profile("wat", ((2.0, 1.25, 1.25), (3.0, 1.5, 1.5)), ((30.0, 40.0, 20.0), (36.0, 48.0, 24.0)),
                        (0.0, 812.5)),
        source=SourceStats(atlas={"freq": [[[0, 50], [100, 25]], [[1, 2], [3, 4]]], "shape": [16, 16], "slices": 9},
                           position={"centres": [0.25, 0.75], "means": [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]],
                                     "presence": [0.5, 1.0]}, flip=(0.95, None)),
        training=Training(stage="adapt:adaent", config={"method": {"name": "adaent"}, "data": {"size": [64, 48]}},
                          epoch=7, source_modality="inn"),
        selection=Selection(selected_by="average", epochs_averaged=3, fallback_from="last.pt"),
        mirror_axes=(0, 1),
        nnunet=NnunetOrigin(folder="/r/F", fold="0,1", configuration="2d", checkpoint="/r/F/fold_0/c.pth",
                            trainer="nnUNetTrainer", mirror_axes=(1, 0), folds=("0", "1"),
                            checkpoints=("/r/F/fold_0/c.pth", "/r/F/fold_1/c.pth")))


def _plain_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_only(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_a_card_round_trips_through_a_safely_loaded_checkpoint(tmp_path):
    card = _full_card()
    model = build_net("unet", **ARGS)
    save_checkpoint(tmp_path / "m.pt", model, card)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # plain data only: the safe loader reads it
    assert raw["version"] == VERSION == 2 and "meta" not in raw and _plain_only(raw["card"])
    assert load_checkpoint(tmp_path / "m.pt")["card"] == card
    _, loaded = load_model(tmp_path / "m.pt")
    assert loaded == card and ModelCard.from_dict(card.to_dict()) == card


def _typed_fields(obj, path: str = "card") -> list[str]:
    """Every field's dotted name whose value is not of its declared type (nested cards walked)."""
    wrong = []
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), typing.get_type_hints(type(obj))[f.name]
        if dataclasses.is_dataclass(value):
            wrong += _typed_fields(value, f"{path}.{f.name}")
        elif not _is(value, tp):
            wrong.append(f"{path}.{f.name}: {value!r} is not {tp}")
    return wrong


def _is(value, tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_is(v, args[0]) for v in value)
        return len(args) == len(value) and all(_is(v, a) for v, a in zip(value, args))
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return isinstance(value, origin or tp) and not (tp is int and isinstance(value, bool))


@pytest.mark.parametrize("source", ["new", "v1-unet", "v1-regressor"])
def test_every_field_of_a_loaded_card_has_its_declared_type(tmp_path, source):
    if source == "new":
        save_checkpoint(tmp_path / "m.pt", build_net("unet", **ARGS), _full_card())
        path = tmp_path / "m.pt"
    else:
        path = OLD / ("unet_v1.pt" if source == "v1-unet" else "regressor_v1.pt")
    card = load_checkpoint(path)["card"]
    assert _typed_fields(card) == []
    assert _typed_fields(card.slicing.norm) == [] and (card.profile is None or _typed_fields(card.profile) == [])


def test_a_card_from_an_old_meta_dict():
    meta = {"net": "unet", "net_args": ARGS, "kind": "segmentation", "label_names": ["bg", "a", "b"],
            "modality": "wat", "stage": "source",
            "normalization": {"method": "percentile-zscore", "clip_low": 0.5, "clip_high": 99.5},
            "slicing": {"axis": 1, "pad_multiple": 16, "size": [64, 64], "spacing": [], "dims": 2},
            "config": {"seed": 0}, "epoch": 4, "source_flip": [0.9], "selected_by": "fallback: source model",
            "fallback_from": "selected.pt", "source_modality": None}
    card = card_from_meta(meta)
    assert card.network == Network("unet", ARGS) and card.kind == "segmentation" and card.labels == ("bg", "a", "b")
    assert card.slicing == Slicing(axis=1, pad_multiple=16, size=(64, 64), norm=Normalization.percentile(0.5, 99.5))
    assert card.slicing.norm.clip == (0.5, 99.5) and not card.slicing.volumetric
    assert card.training == Training(stage="source", config={"seed": 0}, epoch=4)
    assert card.source == SourceStats(flip=(0.9,)) and card.profile is None and card.nnunet is None
    assert card.selection == Selection(selected_by="fallback: source model", fallback_from="selected.pt")
    # a minimal old meta (an external model adapted in memory) takes the defaults
    bare = card_from_meta({"net": "Linear", "stage": "adapt:tent", "external": True})
    assert bare == ModelCard(network=Network("Linear"), training=Training(stage="adapt:tent"))


def test_version_1_checkpoints_load_with_the_same_card_fields():
    raw = torch.load(OLD / "unet_v1.pt", weights_only=True)
    meta = raw["meta"]
    assert raw["version"] == 1
    card = load_checkpoint(OLD / "unet_v1.pt")["card"]
    assert (card.network.name, card.network.args) == (meta["net"], meta["net_args"])
    assert card.kind == meta["kind"] == "segmentation" and list(card.labels) == meta["label_names"]
    assert card.modality == meta["modality"] and card.training.stage == meta["stage"] == "source"
    assert card.training.epoch == meta["epoch"] and card.training.config == meta["config"]
    sl = meta["slicing"]
    assert (card.slicing.axis, card.slicing.pad_multiple, card.slicing.dims) == (sl["axis"], sl["pad_multiple"],
                                                                                 sl["dims"])
    assert card.slicing.norm.clip == (meta["normalization"]["clip_low"], meta["normalization"]["clip_high"])
    assert card.source.atlas == meta["source_atlas"] and card.source.position == meta["source_position"]
    assert list(card.source.flip) == meta["source_flip"]
    p = meta["profile"]
    assert card.profile.modality == p["modality"] and card.profile.intensity == tuple(p["intensity"])
    assert [list(v) for v in card.profile.spacing] == p["spacing"] and [list(v) for v in card.profile.shape] == p["shape"]
    regressor = load_checkpoint(OLD / "regressor_v1.pt")["card"]
    assert regressor.kind == "regression" and regressor.network.name == "regressor" and regressor.source.atlas is None


def test_a_version_1_checkpoint_predicts_as_it_did(tmp_path):
    """The mask and probabilities the code that wrote it predicted for one phantom scan (make_v1.py)."""
    import nibabel as nib

    from sfda.data.phantom import make_phantom
    from sfda.stages.predict import predict

    make_phantom(tmp_path / "data", n_subjects=4, shape=(8, 32, 32))
    scan = tmp_path / "data" / "P04" / "P04_inn.nii.gz"
    predict(checkpoint=str(OLD / "unet_v1.pt"), inputs=[str(scan)], out=str(tmp_path / "pred"), probabilities=True,
            progress=False)
    want = np.load(OLD / "unet_v1_P04_inn.npz")
    mask = np.asarray(nib.load(tmp_path / "pred" / "P04_inn_seg.nii.gz").dataobj)
    prob = np.asarray(nib.load(tmp_path / "pred" / "P04_inn_prob_foreground.nii.gz").dataobj)
    assert np.array_equal(mask, want["mask"]) and np.allclose(prob, want["foreground"], atol=1e-6)
    model, card = load_model(OLD / "regressor_v1.pt")
    with torch.no_grad():
        ratios = model(torch.zeros(2, 1, 32, 32))
    assert ratios.shape == (2, len(card.labels)) and torch.allclose(ratios.sum(1), torch.ones(2), atol=1e-5)


def test_updating_a_card_keeps_the_weights_and_writes_version_2(tmp_path):
    path = tmp_path / "old.pt"
    path.write_bytes((OLD / "unet_v1.pt").read_bytes())
    before = load_checkpoint(path)
    update_card(path, lambda c: replace(c, source=replace(c.source, flip=(0.5,))))
    after = load_checkpoint(path)
    assert torch.load(path, weights_only=True)["version"] == VERSION
    assert after["card"] == replace(before["card"], source=replace(before["card"].source, flip=(0.5,)))
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert after["train_state"]["epoch"] == before["train_state"]["epoch"]


def test_a_card_of_a_newer_version_or_a_damaged_card_is_refused(tmp_path):
    from sfda.errors import SfdaError

    model = build_net("unet", **ARGS)
    state = {k: v for k, v in model.state_dict().items()}
    torch.save({"format": "sfda-checkpoint", "version": 99, "card": {}, "state_dict": state}, tmp_path / "new.pt")
    with pytest.raises(SfdaError, match="version 99"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": "sfda-checkpoint", "version": 2, "card": {"kind": "segmentation"}, "state_dict": state},
               tmp_path / "bad.pt")
    with pytest.raises(SfdaError, match="model card is damaged"):
        load_checkpoint(tmp_path / "bad.pt")

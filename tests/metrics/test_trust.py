"""The label-free trust signals against hand-computed answers, and the adapt stage's fall-back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfda.config.card import ModelCard, Network, SourceStats
from sfda.metrics.trust import atlas_maps, atlas_share, flip_agreement, label_atlas, trust_flags


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """4 slices of 6x8: class 1 in rows 2-3, cols 2-4 on every slice; class 2 at (5, 7) on one slice."""
    labels = np.zeros((4, 6, 8), np.int64)
    labels[:, 2:4, 2:5] = 1
    labels[0, 5, 7] = 2
    return labels, np.ones_like(labels, bool)


def test_label_atlas_counts_how_often_each_class_covers_each_pixel():
    labels, valid = _labels()
    atlas = label_atlas(labels, valid, 3)
    freq = np.asarray(atlas["freq"])
    assert atlas["shape"] == [6, 8] and freq.shape == (2, 6, 8)
    assert freq[0, 2, 2] == 100 and freq[0, 0, 0] == 0 and freq[1, 5, 7] == 25 and freq[1].sum() == 25


def test_label_atlas_is_block_averaged_to_the_grid_and_stretched_back(monkeypatch):
    monkeypatch.setattr("sfda.metrics.trust.ATLAS_GRID", 4)
    labels = np.zeros((1, 8, 8), np.int64)
    labels[0, :2, :2] = 1  # one full 2x2 cell of the 4x4 grid
    labels[0, 7, 7] = 1  # a quarter of another
    freq = np.asarray(label_atlas(labels, np.ones_like(labels, bool), 2)["freq"])
    assert freq.shape == (1, 4, 4) and freq[0, 0, 0] == 100 and freq[0, 3, 3] == 25 and freq[0, 1, 1] == 0
    maps = atlas_maps({"freq": freq.tolist()}, (8, 8))
    assert maps.shape == (1, 8, 8) and maps[0, 1, 1] == 1.0 and maps[0, 6, 6] == 0.25


def test_atlas_share_is_the_share_of_predicted_pixels_where_the_source_put_the_class():
    labels, valid = _labels()
    atlas = label_atlas(labels, valid, 3)
    pred = np.zeros((4, 6, 8), np.int64)
    pred[:, 2:4, 2:5] = 1  # 24 pixels in place
    pred[:, 0, 0:2] = 1  # 8 pixels where no source label ever was
    share = atlas_share(pred, valid, atlas)
    assert share[0] == pytest.approx(24 / 32) and share[1] is None  # class 2 never predicted


def test_flip_agreement_is_dice_with_the_mirrored_prediction_mirrored_back():
    valid = np.ones((4, 4, 6), bool)
    pred = np.zeros((4, 4, 6), np.int64)
    pred[:, 1:3, 1:3] = 1  # 16 pixels
    same = pred[..., ::-1].copy()  # what a mirror-consistent model predicts on the mirrored slices
    assert flip_agreement(pred, same, valid, 2) == [pytest.approx(1.0)]
    shifted = np.zeros_like(pred)
    shifted[:, 1:3, 0:2] = 1  # mirrored back: cols 4-5, disjoint from cols 1-2
    assert flip_agreement(pred, shifted, valid, 2) == [pytest.approx(0.0)]


def test_warnings_name_the_signal_the_class_and_the_value():
    flags = trust_flags({"atlas_share": [0.51, None], "flip_agreement": [0.9, 0.2]}, ["bg", "disc", "vert"])
    assert [k for k, _ in flags] == [1, 2]
    assert flags[0][1].startswith("atlas_share of disc is 0.51") and flags[1][1].startswith("flip_agreement of vert")


class _Painter(torch.nn.Module):
    """Predicts class 1 inside a fixed box, whatever the image (a model that has learnt a place)."""

    def __init__(self, rows: slice, cols: slice):
        super().__init__()
        self.rows, self.cols = rows, cols
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:]) + self.bias
        logits[:, 1, self.rows, self.cols] = 5.0
        return logits


def _card(names: list[str], atlas: dict | None = None) -> ModelCard:
    return ModelCard(network=Network("painter"), labels=tuple(names), source=SourceStats(atlas=atlas))


def _check(tmp_path, adapted, source, card: ModelCard, labels: np.ndarray, on_distrust: str,
           images: np.ndarray | None = None) -> tuple:
    """The trust check of ``adapted`` against ``source`` (both described by ``card``), in memory:
    (the model to use, its card, done.json's decision, trust.json)."""
    from sfda.data.sliceset import SliceSet
    from sfda.stages.trust import check_trust

    images = np.zeros((len(labels), 1, *labels.shape[1:]), np.float32) if images is None else images
    model, chosen, done = check_trust(adapted, card, source=(source, card), label_names=list(card.labels),
                                      target=SliceSet.from_arrays(images, labels, len(card.labels)),
                                      on_distrust=on_distrust, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trust.json"]  # the loop writes selected.pt
    return model, chosen, done["trust"], json.loads((tmp_path / "trust.json").read_text())


@pytest.mark.parametrize("on_distrust", ["source", "keep"])
def test_check_trust_flags_a_mask_in_the_wrong_place_and_falls_back(tmp_path, on_distrust):
    labels, valid = _labels()
    atlas = label_atlas(labels, valid, 2 + 1)
    wrong, right = _Painter(slice(4, 6), slice(5, 8)), _Painter(slice(2, 4), slice(2, 5))
    card = _card(["bg", "disc", "vert"], atlas)
    model, chosen, decision, result = _check(tmp_path, wrong, right, card, labels, on_distrust)
    assert result["signals"]["atlas_share"][0] == pytest.approx(0.0)
    assert result["source_signals"]["atlas_share"][0] == pytest.approx(1.0)
    assert any(w.startswith("atlas_share of disc") for w in result["warnings"])
    assert decision["warnings"] == result["warnings"] and decision["fallback"] == result["fallback"]
    if on_distrust == "source":
        assert result["fallback"] == "source" and model is right
        assert chosen.selection.selected_by == "fallback: source model"
        assert chosen.selection.fallback_from == "selected.pt"
    else:
        assert result["fallback"] is None and model is wrong and chosen is card


def test_flip_signal_is_dropped_where_the_source_model_fails_the_mirror_test_itself():
    from sfda.metrics.trust import calibrated_flip

    assert calibrated_flip([0.1, 0.2, 0.9], [0.95, 0.3, None]) == [0.1, None, 0.9]
    assert calibrated_flip([0.1, 0.2], None) == [0.1, 0.2]


def test_train_source_stores_its_own_flip_agreement(tiny_train_config, tmp_path):
    from sfda.engine.checkpoint import load_checkpoint
    from sfda.stages.train import train_source

    out = train_source(tiny_train_config(tmp_path / "src"), progress=False)
    flip = load_checkpoint(out / "last.pt")["card"].source.flip
    assert len(flip) == 1 and (flip[0] is None or 0.0 <= flip[0] <= 1.0)


def test_vanish_warns_when_a_structure_the_source_model_finds_is_lost():
    from sfda.metrics.trust import vanish_flags

    names = ["bg", "liver", "kidney", "spleen"]
    source = {"fractions": [0.10, 0.010, 0.0001], "pixels": 10000}  # the spleen: 1 pixel, below MIN_PIXELS
    adapted = {"fractions": [0.12, 0.002, 0.0], "pixels": 10000}
    flags = vanish_flags(adapted, source, names)
    assert len(flags) == 1 and flags[0][0] == 2 and flags[0][1].startswith("kidney vanishes")
    assert not vanish_flags({"fractions": [0.09, 0.0026, 0.0], "pixels": 10000}, source, names)  # > a quarter


def test_check_trust_falls_back_when_the_adapted_model_loses_a_structure(tmp_path):
    labels, _ = _labels()
    empty, found = _Painter(slice(0, 0), slice(0, 0)), _Painter(slice(2, 4), slice(2, 5))
    model, _, _, result = _check(tmp_path, empty, found, _card(["bg", "disc", "vert"]), labels, "source")
    assert [w for w in result["warnings"] if "vanishes" in w][0].startswith("disc vanishes")
    assert result["fallback"] == "source" and model is found


def test_without_its_own_calibration_the_source_models_mirror_test_on_the_target_decides(tmp_path):
    """A model trained elsewhere (no ``source_flip``): where the source model itself fails the mirror
    test on the adaptation images, the adapted model's flip agreement is not judged."""
    labels, _ = _labels()
    box = _Painter(slice(2, 4), slice(1, 3))  # off-centre: its mask never survives a mirror
    card = _card(["bg", "disc", "vert"])
    model, chosen, _, result = _check(tmp_path, box, box, card, labels, "source")
    assert result["source_signals"]["flip_agreement"][0] == pytest.approx(0.0)
    assert result["signals"]["flip_agreement"][0] is None and not result["warnings"]
    assert model is box and chosen is card and result["fallback"] is None


def test_a_structure_shrunk_against_both_the_source_model_and_the_prior_is_a_caution():
    from sfda.metrics.trust import shrink_cautions
    from sfda.stages.trust import prior_shares

    names = ["bg", "disc", "cord"]
    source = {"fractions": [0.13, 0.10], "pixels": 10_000}
    adapted = {"fractions": [0.04, 0.06], "pixels": 10_000}  # disc under half of both; cord not
    lines = shrink_cautions(adapted, source, [0.137, 0.05], names)
    assert len(lines) == 1 and lines[0].startswith("disc shrank")
    assert shrink_cautions(adapted, source, [0.07, 0.05], names) == []  # the prior expects as little: quiet
    assert shrink_cautions(adapted, source, None, names) == []  # no prior, no caution
    # the prior's share weights each image by its real pixels: 0.2 on 3 pixels, 0.0 on 1
    valid = np.array([[1, 1, 1], [1, 0, 0]], bool)
    assert np.allclose(prior_shares(np.array([[0.8, 0.2], [1.0, 0.0]]), valid), [0.15])


@pytest.mark.parametrize("on_distrust, flagged, expect", [("structure", [1], "structures"),
                                                      ("structure", [1, 2], "source"), ("source", [1], "source")])
def test_structure_fall_back_takes_only_the_distrusted_structures_from_the_source_model(tmp_path, monkeypatch,
                                                                                         on_distrust, flagged, expect):
    """``on_distrust: structure``: one of two structures distrusted -> selected.pt merges (that structure
    from the source model, the other from the adapted one); both distrusted -> the source model itself.
    The model handed back is the one selected.pt is written with: it rebuilds from its card alone."""
    from sfda.engine.checkpoint import load_model, save_checkpoint
    from sfda.nets import build_net
    from sfda.stages import trust as stage

    names, args = ["bg", "liver", "kidney"], {"in_channels": 1, "num_classes": 3, "width": 4, "depth": 2}
    card = ModelCard(network=Network("unet", args), kind="segmentation", labels=tuple(names))
    torch.manual_seed(0)
    adapted, source = build_net("unet", **args).eval(), build_net("unet", **args).eval()
    monkeypatch.setattr(stage, "trust_flags", lambda s, n: [(k, f"atlas_share of {n[k]} is 0.10") for k in flagged])
    monkeypatch.setattr(stage, "vanish_flags", lambda *a: [])
    labels = np.zeros((2, 16, 16), np.int64)
    images = np.random.default_rng(0).normal(size=(2, 1, 16, 16)).astype(np.float32)
    chosen, chosen_card, decision, result = _check(tmp_path, adapted, source, card, labels, on_distrust, images)
    save_checkpoint(tmp_path / "selected.pt", chosen, chosen_card)
    model, saved = load_model(tmp_path / "selected.pt")
    x = torch.from_numpy(images)
    with torch.no_grad():
        out, p_src, p_ad = torch.softmax(model(x), 1), torch.softmax(source(x), 1), torch.softmax(adapted(x), 1)
    assert result["fallback"] == expect == decision["fallback"] and saved == chosen_card
    assert torch.allclose(out[:, 1], p_src[:, 1], atol=1e-5)
    if expect == "structures":
        assert result["fallback_structures"] == decision["fallback_structures"] == ["liver"]
        assert saved.selection.selected_by == "fallback: source model for liver"
        ratio = out[:, 2] / out[:, 0]  # the adapted model's proportions between the structures it keeps
        assert torch.allclose(ratio, p_ad[:, 2] / p_ad[:, 0], rtol=1e-4)
    else:
        assert torch.allclose(out, p_src, atol=1e-6)

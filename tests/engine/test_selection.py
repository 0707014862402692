"""Label-free epoch selection and the collapse flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfda.config import MethodConfig
from sfda.engine.collapse import flag_collapse as _flag_collapse
from sfda.engine.selection import HoldoutStats, WeightAverage, select_epoch
from sfda.inference import iter_outputs
from sfda.methods import build_method


def holdout_scores(model: torch.nn.Module, images: np.ndarray, valid: np.ndarray, prior: np.ndarray,
                   lam: float, batch_size: int = 64) -> dict:
    """Label-free scores of ``model`` on slices ``images`` (N, C, H, W) with prior (N, K), in one pass
    of their own: what the end of an epoch must log while sharing the validation's forward pass."""
    stats = HoldoutStats(valid, prior, lam)
    for rows, logits in iter_outputs(model, images, batch_size, "cpu"):
        stats.add(rows, logits)
    return stats.result()


def test_select_epoch_minimum_last_on_ties_and_fallbacks():
    log = [{"epoch": 1, "holdout_kl": 0.3}, {"epoch": 2, "holdout_kl": 0.1}, {"epoch": 3, "holdout_kl": 0.1},
           {"epoch": 4, "holdout_kl": 0.2}]
    assert select_epoch(log, "holdout_kl") == 3
    assert select_epoch(log, "last") == 4
    assert select_epoch(log, "holdout_entropy") is None
    assert select_epoch([], "last") is None


class _Const(torch.nn.Module):
    """Predicts the same class probabilities (p_bg, p_fg) at every pixel."""

    def __init__(self, fg: float):
        super().__init__()
        self.logit = float(np.log(fg / (1 - fg)))

    def forward(self, x):
        z = torch.zeros(x.shape[0], 2, *x.shape[2:])
        z[:, 1] = self.logit
        return z


def test_holdout_scores_match_the_analytic_values():
    fg = 0.2
    images = np.zeros((5, 1, 4, 6), dtype=np.float32)
    valid = np.ones((5, 4, 6), dtype=bool)
    prior = np.tile([0.9, 0.1], (5, 1)).astype(np.float32)
    out = holdout_scores(_Const(fg), images, valid, prior, lam=2.0)
    ent = -(fg * np.log(fg) + (1 - fg) * np.log(1 - fg))
    kl = 0.9 * np.log(0.9 / 0.8) + 0.1 * np.log(0.1 / 0.2)
    assert out["holdout_entropy"] == pytest.approx(ent, rel=1e-5)
    assert out["holdout_kl"] == pytest.approx(kl, rel=1e-4)
    assert out["holdout_objective"] == pytest.approx(ent + 2.0 * kl, rel=1e-4)
    assert out["holdout_fraction"] == 0.0  # argmax is background everywhere
    assert out["holdout_prior_fraction"] == pytest.approx(0.1)


@pytest.mark.parametrize("row, flagged", [
    ({"epoch": 1, "pred_fraction": 0.10, "prior_fraction": 0.12}, False),
    ({"epoch": 1, "pred_fraction": 0.0, "prior_fraction": 0.12}, True),
    ({"epoch": 1, "pred_fraction": 0.01, "prior_fraction": 0.12}, True),
    ({"epoch": 1, "pred_fraction": 0.10, "prior_fraction": 0.12, "holdout_fraction": 0.6,
      "holdout_prior_fraction": 0.12}, True),
    ({"epoch": 1, "holdout_fraction": 0.11, "holdout_prior_fraction": 0.12}, False),
])
def test_collapse_flag_on_adaptation_and_held_out_images(row, flagged):
    _flag_collapse(row, build_method("adaent", MethodConfig()))
    assert ("collapse" in row) == flagged
    if flagged and "holdout_fraction" in row and row.get("pred_fraction") == 0.10:
        assert "held-out" in row["collapse"]


@pytest.mark.parametrize("fractions, words", [
    ((0.10, 0.02), None),
    ((0.119, 0.001), "kidney vanishes"),
    ((0.03, 0.09), "kidney floods"),
])
def test_collapse_flag_per_structure_when_the_total_looks_right(fractions, words):
    """Liver 0.10 and kidney 0.02 expected: the total (0.12) stays fine while one structure goes."""
    row = {"epoch": 1, "pred_fraction": sum(fractions), "prior_fraction": 0.12, "class_fraction_1": fractions[0],
           "class_prior_1": 0.10, "class_fraction_2": fractions[1], "class_prior_2": 0.02}
    _flag_collapse(row, build_method("adaent", MethodConfig()), ["background", "liver", "kidney"])
    assert row.get("collapse") is None if words is None else words in row["collapse"]


def test_average_weights_means_floats_and_keeps_integer_buffers():
    average = WeightAverage()
    for state in ({"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)},
                  {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}):
        average.add(state)
    avg = average.result()
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 9


def test_adapt_with_select_average_writes_the_mean_of_the_epochs(tiny_cases, tiny_source, tmp_path):
    import json

    from sfda.config import AdaptConfig, load_config
    from sfda.engine.checkpoint import load_checkpoint
    from sfda.stages.adapt import adapt

    checkpoint, prior = tiny_source
    out = tmp_path / "run"
    adapt(load_config(AdaptConfig, None, [
        f"data.cases={tiny_cases}", "data.modality=inn", "data.subjects=[P03]", f"checkpoint={checkpoint}",
        f"prior={prior}", "method.name=adaent", "optim.batch_size=4", "optim.max_steps_per_epoch=2",
        "optim.lr=1e-2", "optim.epochs=3", "select=average", "on_distrust=keep", "keep_epochs=true",
        f"out={out}"]), progress=False)
    epochs = [load_checkpoint(out / f"epoch_{e:03d}.pt")["state_dict"] for e in (1, 2, 3)]
    selected = load_checkpoint(out / "selected.pt")
    assert selected["card"].selection.selected_by == "average" and selected["card"].selection.epochs_averaged == 3
    for k, v in selected["state_dict"].items():
        if v.is_floating_point():
            assert torch.allclose(v, sum(s[k] for s in epochs) / 3, atol=1e-6), k
    floats = [k for k, v in epochs[-1].items() if v.is_floating_point()]
    assert any(not torch.equal(selected["state_dict"][k], epochs[-1][k]) for k in floats), "the average is the last"
    assert json.loads((out / "done.json").read_text())["selection"] == {"criterion": "average",
                                                                        "epoch": "mean of 1-3"}


def test_end_of_epoch_evaluation_is_one_forward_pass_with_the_same_scores(tiny_cases, tmp_path):
    """Adaptation's validation Dice and held-out scores share one pass over the validation slices."""
    from sfda.config import DataConfig
    from sfda.inference import predict_slices
    from sfda.metrics.subjects import subject_dice
    from sfda.engine.validate import evaluate_epoch
    from sfda.io.cases import load_cases
    from sfda.nets import build_net
    from sfda.stages.common import slices_for

    from sfda.config.card import Slicing

    val = slices_for(load_cases(tiny_cases), ["P03"], "inn", Slicing.from_config(DataConfig(axis=0)), with_labels=True,
                     progress=False)
    prior = np.tile([0.9, 0.1], (len(val), 1))
    torch.manual_seed(0)
    net = build_net("unet", width=4, depth=2)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    method = build_method("adaent", MethodConfig(name="adaent", lam=0.5))
    row = evaluate_epoch(net, method, val, prior, False, torch.device("cpu"))
    assert len(calls) == -(-len(val) // 64)
    want = holdout_scores(net, val.images, val.valid_mask(), prior, lam=0.5)
    for key, value in want.items():
        assert row[key] == pytest.approx(value, rel=1e-6)
    assert row["val_dice_per_subject"] == subject_dice(val, predict_slices(net, val.images)[0])
    assert row["val_s"] > 0


def test_the_kept_epoch_resumes_with_the_run_and_is_what_the_selection_hands_back(tmp_path):
    """select=holdout_*: the best epoch's weights are kept in memory and in last.pt's state (no
    selected.pt written each time it improves); a run begun by an older sfda has them in selected.pt."""
    from sfda.config.card import ModelCard, Network
    from sfda.engine.checkpoint import load_checkpoint, save_checkpoint
    from sfda.engine.selection import Selector
    from sfda.nets import build_net

    args = {"width": 4, "depth": 2}
    card = ModelCard(network=Network("unet", args), kind="segmentation", labels=("bg", "fg"))
    torch.manual_seed(0)
    model = build_net("unet", **args)
    selector, log = Selector("holdout_kl", card, tmp_path), [{"epoch": 1, "holdout_kl": 0.1}]
    selector.update(model, log)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    log.append({"epoch": 2, "holdout_kl": 0.3})
    selector.update(model, log)
    save_checkpoint(tmp_path / "last.pt", model, card, train_state={"selector": selector.state_dict()})
    older = build_net("unet", **args)  # a run begun by an older sfda: no weights kept, selected.pt has them
    older.load_state_dict(best)
    save_checkpoint(tmp_path / "selected.pt", older, card)
    for state in (load_checkpoint(tmp_path / "last.pt")["train_state"]["selector"], {}):
        resumed = Selector("holdout_kl", card, tmp_path)
        resumed.load_state_dict(state)
        run = [*log, {"epoch": 3, "holdout_kl": 0.2}]
        resumed.update(model, run)
        choice, (chosen, chosen_card) = resumed.finish(model, run, card)
        assert choice == {"criterion": "holdout_kl", "epoch": 1} and chosen is not model
        assert all(torch.equal(v, best[k]) for k, v in chosen.state_dict().items())
        assert chosen_card.selection.selected_by == "holdout_kl"


def test_the_last_epoch_selected_is_the_trained_model_with_its_final_card(tmp_path):
    from dataclasses import replace

    from sfda.config.card import ModelCard, Network
    from sfda.engine.selection import Selector

    card = ModelCard(network=Network("unet"), labels=("bg", "fg"))
    final = replace(card, source=replace(card.source, flip=(0.9,)))
    model = torch.nn.Linear(1, 1)
    for criterion, row in (("last", {}), ("holdout_kl", {}), ("holdout_kl", {"holdout_kl": 0.1})):
        selector, log = Selector(criterion, card, tmp_path), [{"epoch": 1, **row}]
        selector.update(model, log)
        choice, (chosen, chosen_card) = selector.finish(model, log, final)
        assert chosen is model and chosen_card == replace(final, selection=replace(final.selection,
                                                                                 selected_by=criterion))
        assert choice == {"criterion": criterion, "epoch": 1}

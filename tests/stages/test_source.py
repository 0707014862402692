"""``resolve_source``: a stage's ``--checkpoint`` or ``--nnunet`` folder becomes a model and its card,
and the stage's config stays as it was given."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from sfda.config import AdaptConfig, EvaluateConfig, MethodConfig, PredictConfig
from sfda.errors import SfdaError
from sfda.stages.source import Adapting, check_source, resolve_source

OLD = Path(__file__).parents[1] / "fixtures" / "checkpoints"


def test_a_checkpoint_resolves_to_its_model_and_card_and_the_config_is_not_written():
    cfg = EvaluateConfig(checkpoint=str(OLD / "unet_v1.pt"), out="unused")
    given = copy.deepcopy(cfg)
    src = resolve_source(cfg, "evaluate")
    assert cfg == given
    assert src.path == cfg.checkpoint and src.card.network.name == "unet" and src.card.labels == ("background",
                                                                                                   "foreground")
    assert not src.model.training and src.model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(SfdaError, match="regression network"):
        resolve_source(EvaluateConfig(checkpoint=str(OLD / "regressor_v1.pt")), "evaluate")


def test_an_nnunet_folder_resolves_to_the_imported_fold_and_the_config_is_not_written(tmp_path, file_traffic):
    pytest.importorskip("dynamic_network_architectures")
    from stages.test_nnunet import make_result_folder

    folder = make_result_folder(tmp_path / "results")
    cfg = AdaptConfig(nnunet=str(folder), fold="0", out=str(tmp_path / "run"))
    given = copy.deepcopy(cfg)
    check_source(cfg, Adapting("tent", cfg.method, "", flag="--method", command="adapt"))
    (tmp_path / "run").mkdir()
    src = resolve_source(cfg, "adapt", single=True)
    assert cfg == given and cfg.checkpoint == ""  # nothing written into the config
    assert src.path == str(tmp_path / "run" / "source.pt") and Path(src.path).is_file()  # stages pass files
    assert src.card.network.name == "nnunet.PlainConvUNet" and src.card.nnunet.fold == "0"
    assert src.card.nnunet.folder == str(folder.resolve()) and src.card.mirror_axes == (0, 1)
    assert src.card.training.config["folder"] == str(folder)
    writes, reads = file_traffic
    assert writes.count(src.path) == 1 and src.path not in reads  # written once, handed on in memory
    again = resolve_source(cfg, "adapt", write=False)  # another process wrote source.pt: read it
    assert again.card == src.card and not src.model.training
    weights = again.model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in src.model.state_dict().items())


def test_what_an_nnunet_source_cannot_do_is_refused_by_explicit_stage_types(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    from stages.test_nnunet import make_result_folder

    folder = make_result_folder(tmp_path / "results")
    with pytest.raises(SfdaError, match="not both"):
        check_source(EvaluateConfig(nnunet=str(folder), checkpoint="x.pt", out="o"))
    adabn = Adapting("adabn", MethodConfig(name="adabn"), "", flag="--method", command="adapt")
    with pytest.raises(SfdaError, match="instance norm"):
        check_source(AdaptConfig(nnunet=str(folder), out="o"), adabn)
    needs_prior = Adapting("adaent", MethodConfig(), "", flag="--adapt", command="predict --adapt")
    with pytest.raises(SfdaError, match="--adapt adaent needs --prior"):
        check_source(PredictConfig(nnunet=str(folder), out="o"), needs_prior)
    check_source(EvaluateConfig(nnunet=str(folder), fold="0", out="o"))  # evaluate adapts nothing: accepted

"""Unpaired domains (``domains:`` in an experiment config): two cohorts, each with its own data,
channel and split; multi-class, resampled slices scored on each scan's own grid."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from sfda.cli import main

TINY = {"net": "unet", "net_args": {"width": 4, "depth": 2},
        "optim": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2}}


def _config(tmp: Path, organ_domains, **extra) -> Path:
    ct, mr = organ_domains
    cfg = {
        "domains": {"ct": {"root": ct, "layout": "nnunet", "modality": "CT",
                           "train": ["c00", "c01"], "val": ["c02"], "test": ["c03"]},
                    "mr": {"root": mr, "train": ["m00", "m01"], "val": [], "test": ["m02", "m03"]}},
        "directions": ["ct->mr"],
        "slicing": {"axis": 2, "size": [32, 32]},
        "methods": ["noadapt", "oracle", "adaent"],
        "seeds": [0],
        "source": TINY,
        "prior": {"method": "source-position", "tags_from_labels": True},
        "adapt": {"optim": {"epochs": 2, "batch_size": 4, "max_steps_per_epoch": 2}, "select": "last"},
        **extra,
    }
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def unpaired(organ_domains, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unpaired")
    out = tmp / "run"
    assert main(["experiment", str(_config(tmp, organ_domains)), "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_each_stage_reads_its_own_domain(unpaired):
    out, results = unpaired
    (direction,) = results["directions"]
    assert (direction["source"], direction["target"]) == ("ct", "mr")
    assert direction["test_subjects"] == ["m02", "m03"]
    src = yaml.safe_load((out / "models" / "ct" / "seed0" / "config.yaml").read_text())["data"]
    oracle = yaml.safe_load((out / "models" / "mr" / "seed0" / "config.yaml").read_text())["data"]
    adapt = yaml.safe_load((out / "ct-mr" / "seed0" / "adaent" / "config.yaml").read_text())
    prior = yaml.safe_load((out / "ct-mr" / "seed0" / "prior.config.yaml").read_text())
    assert (src["modality"], src["subjects"], src["val_subjects"]) == ("CT", ["c00", "c01"], ["c02"])
    assert (oracle["modality"], oracle["subjects"]) == ("T2SPIR", ["m00", "m01"])
    assert (adapt["data"]["modality"], adapt["data"]["subjects"]) == ("T2SPIR", ["m00", "m01"])
    assert (prior["source_modality"], prior["source_subjects"]) == ("CT", ["c00", "c01"])
    assert prior["data"]["subjects"] == ["m00", "m01"]
    scored = json.loads((out / "ct-mr" / "seed0" / "adaent" / "eval" / "metrics.json").read_text())
    assert scored["subjects"] == ["m02", "m03"] and scored["modality"] == "T2SPIR"


def test_every_structure_is_scored_on_the_scans_own_grid(unpaired, organ_domains):
    out, results = unpaired
    summary = results["directions"][0]["methods"]["oracle"]
    assert {"liver", "right_kidney", "spleen"} <= set(summary)
    # Scored on the stored label volumes: the Dice of the labels against themselves through the
    # 32x32 grid would not be exact, so recompute one subject's Dice from a native prediction.
    ckpt = out / "models" / "mr" / "seed0" / "last.pt"
    scan = Path(organ_domains[1]) / "imagesTr" / "m03_0000.nii.gz"
    assert main(["predict", "--checkpoint", str(ckpt), str(scan), "--out", str(out / "pred")]) == 0
    mask = nib.load(out / "pred" / "m03.nii.gz")  # nnU-Net naming: m03_0000 -> m03
    image = nib.load(scan)
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    truth = np.asarray(nib.load(Path(organ_domains[1]) / "labelsTr" / "m03.nii.gz").dataobj)
    pred = np.asarray(mask.dataobj)
    rows = json.loads((out / "models" / "mr" / "seed0" / "eval" / "metrics.json").read_text())["per_subject"]
    for k, name in ((1, "liver"), (2, "right_kidney"), (3, "spleen")):
        (row,) = [r for r in rows if r["subject"] == "m03" and r["class"] == name]
        a, b = pred == k, truth == k
        expected = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1) if (a.any() or b.any()) else 1.0
        assert row["dice"] == pytest.approx(expected, abs=1e-6)


def _refused(tmp, organ_domains, capsys, *overrides) -> str:
    out = tmp / "refused"
    code = main(["experiment", str(_config(tmp, organ_domains)), "--out", str(out), *overrides])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


@pytest.mark.parametrize("override, words", [
    ("domains.ct.val=[c00]", "domains.ct.train and in domains.ct.val/domains.ct.test"),
    ("domains.ct.train=[c00,c00]", "domains.ct.train lists ['c00'] more than once"),
    ("domains.mr.test=[m02,zz9]", "names subject(s) zz9"),
    ("directions=[ct->pet]", "domain 'pet'"),
    ("domains.mr.modality=T1", "domains.mr.modality 'T1'"),
    ("split.train=[c00]", "not both"),
    ("slicing.size=[32]", "slicing.size takes two values"),
])
def test_a_bad_domain_is_refused_before_anything_is_written(tmp_path, organ_domains, capsys, override, words):
    assert words in _refused(tmp_path, organ_domains, capsys, override)


def test_domains_with_different_label_names_are_refused(tmp_path, organ_domains, capsys):
    other = Path(tmp_path / "mr2")
    import shutil

    shutil.copytree(organ_domains[1], other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "liver": 1, "left_kidney": 2, "spleen": 3}
    (other / "dataset.json").write_text(json.dumps(meta))
    assert "name their labels differently" in _refused(tmp_path, organ_domains, capsys, f"domains.mr.root={other}")


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_every_shipped_config_parses_and_its_splits_pass(name):
    from sfda.config import load_config
    from sfda.config.experiment import ExperimentConfig
    from sfda.stages.experiment_domains import check_config

    check_config(load_config(ExperimentConfig, str(Path(__file__).parents[1] / "configs" / name)))


def test_the_abdomen_config_names_subjects_that_exist():
    from sfda.config import load_config
    from sfda.config.experiment import ExperimentConfig
    from sfda.stages.experiment_domains import resolve

    repo = Path(__file__).parents[1]
    cfg = load_config(ExperimentConfig, str(repo / "configs" / "abdomen-ct-mr.yaml"))
    for dom in cfg.domains.values():
        dom.root = str((repo / dom.root).resolve())
        if not Path(dom.root).is_dir():
            pytest.skip(f"real data not found at {dom.root} (the abdomen scans live in ../shared/data)")
    cl, domains = resolve(cfg)
    assert (domains["ct"].modality, domains["mr"].modality) == ("CT", "T2SPIR")
    assert cl.label_names == ["background", "liver", "right_kidney", "left_kidney", "spleen"]


def test_resampling_options_at_their_defaults_leave_old_fingerprints_alone(tiny_cases):
    """Runs made before slicing.size / slicing.spacing existed are still reused."""
    from sfda.config import TrainConfig, load_config
    from sfda.stages.freshness import Stage

    plain = Stage(load_config(TrainConfig, None, [f"data.cases={tiny_cases}"]), [])
    sized = Stage(load_config(TrainConfig, None, [f"data.cases={tiny_cases}", "data.size=[16,16]"]), [])
    assert "data.size" not in plain.config and "data.spacing" not in plain.config
    assert sized.config["data.size"] == [16, 16] and sized.fingerprint != plain.fingerprint

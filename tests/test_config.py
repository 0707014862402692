"""Typed configs: defaults, YAML, dotted overrides, and refusals of bad keys and types."""

from __future__ import annotations

import pytest
import yaml

from sfda.config import (
    AdaptConfig,
    DataConfig,
    OptimConfig,
    PriorTrainConfig,
    TrainConfig,
    config_to_dict,
    load_config,
    merge_into,
    parse_override,
    save_config,
)
from sfda.errors import SfdaError


def test_defaults():
    cfg = load_config(TrainConfig)
    assert cfg == TrainConfig()
    assert cfg.net == "enet" and cfg.seed == 0 and cfg.device == "auto" and cfg.resume is False
    assert cfg.optim == OptimConfig()
    assert cfg.optim.lr == 1e-3 and cfg.optim.epochs == 20 and cfg.optim.max_steps_per_epoch == 0
    assert cfg.data.subjects == [] and cfg.data.axis == -1 and cfg.data.pad_multiple == 16
    adapt = load_config(AdaptConfig)
    assert adapt.method.name == "adaent" and adapt.method.kl == "forward"
    assert adapt.optim.lr == 1e-4 and adapt.optim.epochs == 10
    prior = load_config(PriorTrainConfig)
    assert prior.optim.epochs == 60 and prior.optim.schedule == "cosine" and prior.net_args == {"width": 64}
    # each config gets its own list objects (no shared mutable defaults)
    a, b = TrainConfig(), TrainConfig()
    a.data.subjects.append("X")
    assert b.data.subjects == []


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("net: unet\nnet_args: {width: 4}\noptim:\n  lr: 0.01\n  epochs: 3\n"
                    "data:\n  modality: wat\n  subjects: [P01, P02]\n")
    cfg = load_config(TrainConfig, str(path), ["optim.lr=1e-4", "data.axis=2", "augment=false"])
    assert cfg.net == "unet" and cfg.net_args == {"width": 4}
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.epochs == 3  # from the file, untouched by the overrides
    assert cfg.optim.batch_size == 12  # default, untouched
    assert cfg.data.modality == "wat" and cfg.data.subjects == ["P01", "P02"]
    assert cfg.data.axis == 2 and cfg.augment is False


@pytest.mark.parametrize("text", ["data.subjects=[A1,B1]", "data.subjects=A1,B1", "data.subjects=[A1, B1]"])
def test_list_override_forms(text):
    assert load_config(TrainConfig, None, [text]).data.subjects == ["A1", "B1"]


def test_list_override_single_and_empty():
    assert load_config(TrainConfig, None, ["data.subjects=A1"]).data.subjects == ["A1"]
    assert load_config(TrainConfig, None, ["data.subjects=A1,B1", "data.subjects="]).data.subjects == []
    # numeric-looking subject names stay strings
    assert load_config(TrainConfig, None, ["data.subjects=[1, 02]"]).data.subjects == ["1", "2"]


def test_later_override_wins_and_base_is_below_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\n")
    cfg = load_config(TrainConfig, str(path), ["seed=7", "seed=9"], base={"seed": 1, "net": "unet"})
    assert cfg.seed == 9 and cfg.net == "unet"


@pytest.mark.parametrize("override, bad_key", [
    ("optim.lrr=1", "optim.lrr"),
    ("nett=unet", "nett"),
    ("data.subject=A1", "data.subject"),
])
def test_unknown_key_lists_valid_keys(override, bad_key):
    with pytest.raises(SfdaError) as err:
        load_config(TrainConfig, None, [override])
    msg = str(err.value)
    assert f"'{bad_key}'" in msg and "valid keys" in msg
    section = bad_key.rsplit(".", 1)[0] + "." if "." in bad_key else ""
    expected = {"optim.": ["optim.lr", "optim.epochs", "optim.max_steps_per_epoch"],
                "data.": ["data.subjects", "data.modality"], "": ["net", "optim", "seed"]}[section]
    for key in expected:
        assert key in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(SfdaError, match=r"unknown config key 'optim.learning_rate'.*optim\.lr"):
        load_config(TrainConfig, str(path))


@pytest.mark.parametrize("override, key", [
    ("optim.lr=abc", "optim.lr"),
    ("optim.lr=true", "optim.lr"),
    ("optim.epochs=1.5", "optim.epochs"),
    ("optim.epochs=[1]", "optim.epochs"),
    ("augment=maybe", "augment"),
    ("net_args=5", "net_args"),
    ("data.subjects=5", "data.subjects"),
    ("data=5", "data"),
    ("optim=fast", "optim"),
])
def test_wrong_types_rejected(override, key):
    with pytest.raises(SfdaError, match=f"config key '{key}'"):
        load_config(TrainConfig, None, [override])


def test_ints_coerced_when_exact():
    cfg = load_config(TrainConfig, None, ["optim.epochs=4.0", "optim.lr=1", "seed='3'"])
    assert cfg.optim.epochs == 4 and isinstance(cfg.optim.epochs, int)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.seed == 3


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(SfdaError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(SfdaError, match="not found"):
        load_config(TrainConfig, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(SfdaError, match="not valid YAML"):
        load_config(TrainConfig, str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SfdaError, match="mapping"):
        load_config(TrainConfig, str(listy))


@pytest.mark.parametrize("cls, overrides", [
    (TrainConfig, ["net=unet", "net_args={width: 4, depth: 2}", "optim.lr=1e-4",
                   "data.subjects=[A1,B1]", "data.clip_high=99.0", "resume=true"]),
    (AdaptConfig, ["method.name=tent", "method.source_subjects=S1,S2", "method.lam=0.5",
                   "optim.schedule=cosine"]),
    (PriorTrainConfig, []),
])
def test_save_config_round_trip(tmp_path, cls, overrides):
    cfg = load_config(cls, None, overrides)
    path = tmp_path / "out" / "config.yaml"
    save_config(cfg, path)
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    again = load_config(cls, str(path))
    assert again == cfg


@pytest.mark.parametrize("overrides, message", [
    (["data.subjects=[A1,A1]"], r"--subjects \(data.subjects\) lists \['A1'\] more than once"),
    (["data.subjects=[A1,B1]", "data.val_subjects=[B1]"], r"subjects \['B1'\] are in --subjects \(data.subjects\)"),
    (["data.size=[32]"], "data.size takes two values"),
    (["data.dims=3", "data.spacing=[1,1]"], "data.spacing takes three values"),
    (["data.size=[32,32]", "data.spacing=[1,1]"], "data.size and data.spacing are both set"),
])
def test_rules_across_a_section_s_fields_are_refused_where_it_is_parsed(overrides, message):
    with pytest.raises(SfdaError, match=message):
        load_config(AdaptConfig, None, overrides)


def test_the_rules_hold_for_a_section_built_in_python_and_after_the_last_override():
    with pytest.raises(SfdaError, match="more than once"):
        DataConfig(subjects=["A1", "A1"])
    # each value alone is fine; together they break the rule: checked once all are merged
    cfg = load_config(AdaptConfig, None, ["data.dims=3", "data.size=[4,16,16]"])
    assert cfg.data.size == [4, 16, 16]
    with pytest.raises(SfdaError, match="more than once"):
        merge_into(AdaptConfig(), {"data": {"subjects": ["A1", "A1"]}})

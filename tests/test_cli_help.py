"""The command line explains itself from each option's one declaration: flag help with default and
limits, `sfda config COMMAND`, `--version`, the nearest key for a typo."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
import yaml

from sfda.cli import build_parser, main
from sfda.cli_flags import CONFIGS, EXAMPLES
from sfda.cli_help import config_class
from sfda.config import AdaptConfig, OptimConfig, load_config, opt
from sfda.config.reference import options
from sfda.errors import SfdaError


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"sfda {version('sfda')}"


@pytest.mark.parametrize("command", list(CONFIGS))
def test_sfda_config_loads_back_unchanged(command, capsys, tmp_path):
    assert main(["config", command]) == 0
    text = capsys.readouterr().out
    assert isinstance(yaml.safe_load(text), dict)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cls = config_class(command)
    assert load_config(cls, str(path)) == cls()


def test_sfda_config_adapt_comments_every_key(capsys):
    main(["config", "adapt"])
    text = capsys.readouterr().out
    assert "lr: 0.0001  # > 0" in text  # adapt's own default, not OptimConfig's
    assert "on_distrust: structure  # one of: structure, source, keep" in text
    undescribed = [o.key for o in options(AdaptConfig) if not o.description]
    assert not undescribed, f"keys without a comment in sfda.config.stages: {undescribed}"


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


def test_a_flags_help_shows_its_key_default_and_limits():
    text = " ".join(_help("adapt").split())
    assert "--lr LR the learning rate [optim.lr; default 0.0001; > 0]" in text
    assert "--kl KL" in text and "one of: forward, reverse" in text
    assert "example: sfda adapt " in text


@dataclasses.dataclass
class _Changed(AdaptConfig):
    optim: OptimConfig = opt(OptimConfig(lr=0.123))  # the optimiser, with another default


def test_help_follows_the_declaration(monkeypatch):
    """Change an option's default where it is declared: the flag's help changes with it."""
    import sfda.config
    from sfda.config import reference

    reference.options.cache_clear()
    monkeypatch.setitem(CONFIGS, "adapt", "_Changed")
    monkeypatch.setattr(sfda.config, "_Changed", _Changed, raising=False)
    try:
        assert "default 0.123" in " ".join(_help("adapt").split())
    finally:
        reference.options.cache_clear()


def test_unknown_key_names_the_nearest():
    with pytest.raises(SfdaError, match=r"unknown config key 'optim.lrr' \(did you mean 'optim.lr'\?\)"):
        load_config(AdaptConfig, overrides=["optim.lrr=0.1"])
    with pytest.raises(SfdaError, match=r"did you mean 'data.dims'\?"):  # the experiment's name in a stage
        load_config(AdaptConfig, overrides=["slicing.dims=3"])


def test_every_command_has_an_example_that_parses():
    parser = build_parser()
    for example in EXAMPLES.values():
        words = shlex.split(example.split(">")[0])  # `sfda config adapt > adapt.yaml`: the command only
        assert words[0] == "sfda"
        assert parser.parse_args(words[1:]).func is not None

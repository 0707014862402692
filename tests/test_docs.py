"""The documentation builds, its commands are real, and its reference follows the declarations."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sfda.cli import build_parser
from sfda.cli_help import config_class
from sfda.config import load_config, opt
from sfda.config.reference import config_markdown, config_yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install .[docs])")
def test_docs_build_strict(tmp_path):
    """`mkdocs build --strict`: every link, anchor, generated page and API entry resolves."""
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()


def _commands(text: str) -> list[str]:
    """Every `sfda ...` command (also `python -m sfda` / `-m sfda` under torchrun) in the page's
    code blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].split("  #")[0].strip()
            m = re.search(r"(?:^|-m )sfda (.*)", line)
            if m and not line.startswith(("#", "import", "from")) and "sfda." not in line.split()[0]:
                out.append(m.group(1))
    return out


COMMANDS = [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in _commands(page.read_text())]


def test_the_docs_hold_commands():
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}:{c[:40]}" for p, c in COMMANDS])
def test_every_documented_command_parses(page, command):
    """Each command names a real subcommand and real flags, and its flags and key=value overrides
    are real config keys with allowed values (the config files it names are loaded too)."""
    from sfda.cli import _overrides

    words = [w for w in shlex.split(command.replace("$R", "RESULTS/x").split(" > ")[0]) if w != "..."]
    parser = build_parser()
    args, extra = parser.parse_known_args(words)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    assert not stray, f"{page}: `sfda {command}`: unknown arguments {stray}"
    if args.command == "experiment":
        load_config(config_class("experiment"), str(ROOT / args.config), list(args.overrides) + extra)
    elif args.command in ("train-source", "train-prior", "prior", "adapt", "evaluate", "predict", "report",
                          "import-nnunet"):
        from sfda.cli import STAGES

        config = args.config if args.config and (ROOT / args.config).is_file() else None
        args.overrides = list(args.overrides) + extra
        load_config(config_class(args.command), config, _overrides(args, STAGES[args.command][1]))


@dataclasses.dataclass
class _Tiny:
    # how many steps to take
    steps: int = opt(10, low=1)
    mode: str = opt("fast", choices=("fast", "slow"))  # how to take them


@dataclasses.dataclass
class _TinyChanged:
    # how many steps to take
    steps: int = opt(20, low=1)
    mode: str = opt("fast", choices=("fast", "slow", "exact"))  # how to take them


def test_the_generated_reference_follows_the_declaration():
    before, after = config_markdown(_Tiny), config_markdown(_TinyChanged)
    assert "| `steps` | int | `10` | >= 1 | how many steps to take |" in before
    assert "| `steps` | int | `20` | >= 1 | how many steps to take |" in after
    assert "one of: fast, slow, exact" in after and "one of: fast, slow, exact" not in before
    assert "mode: fast  # one of: fast, slow" in config_yaml(_Tiny)

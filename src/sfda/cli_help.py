"""What the command line says about itself: each flag's help, each command's example, ``sfda
--version``, ``sfda config COMMAND`` and the documentation's command reference.

Every text about an option comes from its one declaration (:mod:`sfda.config.stages`, read by
:mod:`sfda.config.reference`); every flag from the parser itself (:func:`sfda.cli.build_parser`).
"""

from __future__ import annotations

import argparse

from sfda.cli_flags import CONFIGS, EXAMPLES


def config_class(command: str) -> type:
    """The config class of ``command`` (``adapt`` -> :class:`sfda.config.AdaptConfig`)."""
    import sfda.config as config
    from sfda.config import experiment

    name = CONFIGS[command]
    return getattr(config, name, None) or getattr(experiment, name)


def flag_help(command: str, key: str) -> str:
    """A flag's help: its config key's description, the key, its default and its limits.
    (``%`` is doubled: argparse formats help texts.)"""
    from sfda.config.reference import flag_help as text

    return text(config_class(command), key).replace("%", "%%")


def switch_help(command: str, name: str) -> str:
    """A true/false flag's help; a flag that turns an option off (``--no-mirroring``) says so first."""
    from sfda.cli_flags import NEGATED, SWITCHES

    key = SWITCHES.get(name) or NEGATED[name]
    return flag_help(command, key) if name in SWITCHES else f"sets {key}=false. {flag_help(command, key)}"


def epilog(command: str) -> str:
    return f"example:\n  {EXAMPLES[command]}\n" if command in EXAMPLES else ""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sfda")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import sys

        return sys.modules[__package__].__version__


class VersionAction(argparse.Action):
    """``--version``: reads the package metadata only when asked, so ``--help`` stays instant."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "print sfda's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"sfda {version()}")
        parser.exit()


def add_config_parser(sub) -> None:
    p = sub.add_parser("config", help="print every key of a command's config as YAML to start a --config file from",
                       description="Print every key of COMMAND's config with its default, its limits and what it "
                       "does, as YAML that --config reads back.", epilog=epilog("config"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", metavar="COMMAND", choices=list(CONFIGS), help="one of: " + ", ".join(CONFIGS))
    p.set_defaults(func=cmd_config)


def cmd_config(args) -> int:
    from sfda.config.reference import config_yaml

    cls = config_class(args.stage)
    title = (f"sfda {args.stage}: every config key with its default; limits and descriptions as comments.\n"
             f"Use it with: sfda {args.stage} --config FILE.yaml (flags and key=value overrides win over it)")
    print(config_yaml(cls, title), end="")
    return 0


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """command name ("adapt", "data index") -> its parser, in the order of ``sfda --help``."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                inner = _subparsers(p)
                out.update({f"{name} {k}": v for k, v in inner.items()} if inner else {name: p})
    return out


def _flag_rows(p: argparse.ArgumentParser) -> list[str]:
    from sfda.config.reference import cell

    rows = ["| argument | what it does |", "|---|---|"]
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        name = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.metavar or a.dest}`"
        text = (a.help or "") % {"default": a.default, "prog": p.prog}
        rows.append(f"| {name} | {cell(text)} |")
    return rows


def commands_markdown(parser: argparse.ArgumentParser) -> str:
    """The command reference: every command's usage, arguments (with each flag's config key,
    default and limits) and example, from the parser itself (:func:`sfda.cli.build_parser`'s)."""
    out = ["# Commands", "", "Generated from the `sfda` parser and the config declarations; "
           "`sfda COMMAND --help` prints the same.", "", "```text", parser.format_usage().strip(), "```", ""]
    for command, p in _subparsers(parser).items():
        out += [f"## `sfda {command}`", "", p.description or "", "", "```text", p.format_usage().strip(), "```", ""]
        out += _flag_rows(p) + [""]
        if command in CONFIGS:
            out += [f"Every config key: [`{command}`](config.md#{command}); `sfda config {command}` prints them."]
        if command in EXAMPLES:
            out += ["", "Example:", "", "```bash", EXAMPLES[command], "```"]
        out.append("")
    return "\n".join(out)


def config_markdown() -> str:
    """The config reference: every command's keys (default, limits, description)."""
    from sfda.config.reference import config_markdown as table
    from sfda.config.reference import describe

    out = ["# Config keys", "", "Generated from the dataclasses of `sfda.config.stages` (and "
           "`sfda.config.experiment`): each key's default, limits and the comment above its declaration. "
           "A key is set in a `--config` YAML file (nested sections) or as a dotted override "
           "(`optim.lr=1e-4`); `sfda config COMMAND` prints a commented file to start from.", ""]
    for command in CONFIGS:
        cls = config_class(command)
        out += [f"## {command}", "", describe(cls), "", table(cls), ""]
    return "\n".join(out)


def reference_pages(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Documentation path -> markdown, generated at build time (docs/hooks.py) from ``parser``
    (:func:`sfda.cli.build_parser`'s: passed in, so this module needs nothing from :mod:`sfda.cli`)."""
    return {"reference/commands.md": commands_markdown(parser), "reference/config.md": config_markdown()}

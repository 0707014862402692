"""Every option's documentation, read from its one declaration.

An option is a dataclass field in :mod:`sfda.config.stages` (or
:mod:`sfda.config.experiment`): its default, its limits (:func:`sfda.config.core.opt`)
and the comment lines right above it, which are its description. This module reads
those at run time (the comments with :mod:`ast`), so the command line's help,
``sfda config STAGE`` and the documentation's reference pages all say what the
source says; nothing here repeats a default or a limit.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import sys
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from sfda.config.core import limits_text


@dataclass(frozen=True)
class Option:
    """One config key: ``key`` dotted from the config's root; ``section`` when it holds keys itself."""

    key: str
    type: str
    default: Any
    limits: str
    description: str
    section: bool = False


@functools.lru_cache(maxsize=None)
def _comments(module_name: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's comment: the comment lines right above it, then the
    one at the end of its line; (class name, "") -> the class docstring's first paragraph."""
    try:
        source = inspect.getsource(sys.modules[module_name])
    except (OSError, TypeError, KeyError):  # no source at hand (a frozen build): no descriptions
        return {}
    lines = source.splitlines()
    tail = {t.start[0]: t.string.lstrip("#").strip() for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type == tokenize.COMMENT and lines[t.start[0] - 1][:t.start[1]].strip()}
    out: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        doc = ast.get_docstring(node)
        if doc:
            out[(node.name, "")] = " ".join(doc.split("\n\n")[0].split())
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                block, i = [], item.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#"):
                    block.insert(0, lines[i].strip().lstrip("#").strip())
                    i -= 1
                text = " ".join(block + [tail.get(item.end_lineno, "")]).strip()
                if text:
                    out[(node.name, item.target.id)] = text
    return out


def describe(cls: type, name: str = "") -> str:
    """The description of field ``name`` of ``cls`` (the nearest class in its MRO that comments
    it), or of ``cls`` itself when ``name`` is empty."""
    for klass in cls.__mro__:
        text = _comments(klass.__module__).get((klass.__name__, name)) if klass.__module__ in sys.modules else None
        if text:
            return text
    return ""


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "section"
    if typing.get_origin(tp) in (list, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{typing.get_origin(tp).__name__}[{args}]" if args else typing.get_origin(tp).__name__
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=None)
def options(cls: type, prefix: str = "") -> tuple[Option, ...]:
    """Every key of config class ``cls`` in declaration order, sections followed by their keys."""
    hints = typing.get_type_hints(cls)
    out = []
    instance = cls()
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(instance, f.name)
        text = describe(cls, f.name)
        if dataclasses.is_dataclass(tp):
            out.append(Option(prefix + f.name, "section", None, "", text or describe(tp), section=True))
            out += [dataclasses.replace(o, default=_nested_default(value, o.key[len(prefix + f.name) + 1:]))
                    for o in options(tp, prefix + f.name + ".")]
            continue
        out.append(Option(prefix + f.name, _type_name(tp), value, limits_text(f.metadata), text))
    return tuple(out)


def _nested_default(section: Any, key: str) -> Any:
    """A nested key's default as the enclosing field sets it (``OptimConfig(lr=1e-4)``), not
    the section class's own."""
    for part in key.split("."):
        section = getattr(section, part)
    return section


def option(cls: type, key: str) -> Option:
    """The option at dotted ``key`` of ``cls``."""
    for o in options(cls):
        if o.key == key:
            return o
    raise KeyError(f"{cls.__name__} has no config key {key!r}")


def show(value: Any) -> str:
    """A default as one would write it in a YAML file."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


def flag_help(cls: type, key: str) -> str:
    """A command-line flag's help: what the option does, its config key, default and limits."""
    o = option(cls, key)
    facts = [key, "default " + show(o.default)] + ([o.limits] if o.limits else [])
    return f"{o.description or 'sets ' + key} [{'; '.join(facts)}]"


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    import textwrap

    return [indent + "# " + line for line in textwrap.wrap(text, width - len(indent))]


def config_yaml(cls: type, title: str = "") -> str:
    """Every key of ``cls`` as a commented YAML file that ``--config`` reads back unchanged."""
    out = [f"# {line}" for line in title.splitlines()] if title else []
    for o in options(cls):
        indent = "  " * o.key.count(".")
        name = o.key.rsplit(".", 1)[-1]
        out += _wrap(o.description, indent) if o.description else []
        if o.section:
            out.append(f"{indent}{name}:")
            continue
        note = f"  # {o.limits}" if o.limits else ""
        out.append(f"{indent}{name}: {show(o.default)}{note}")
    return "\n".join(out) + "\n"


def cell(text: str) -> str:
    """``text`` for a markdown table cell: pipes escaped, and outside code spans ``<`` (``<name>``
    would be read as HTML) and brackets (``[x][]`` would be read as a link)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace("[", "\\[").replace("]", "\\]")
                    for i, p in enumerate(parts))


def config_markdown(cls: type) -> str:
    """A markdown table of every key of ``cls``: key, type, default, limits, description."""
    rows = ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
    for o in options(cls):
        default = "" if o.section else f"`{show(o.default)}`"
        rows.append(f"| `{o.key}` | {o.type} | {cell(default)} | {cell(o.limits)} | {cell(o.description)} |")
    return "\n".join(rows) + "\n"

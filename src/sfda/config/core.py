"""Reading typed configs: dataclass defaults, then a YAML file, then dotted ``key=value`` overrides.

Unknown keys are refused with the list of valid ones; values are coerced to the
field's type and checked against the limits the field declares with :func:`opt`
(range, choices, aliases), so a bad value stops the run where it is parsed,
before any output exists. :func:`config_to_dict` gives the merged config that
every stage writes beside its outputs (``config.yaml``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from sfda.errors import SfdaError


def opt(default: Any, *, low: float | None = None, above: float | None = None, high: float | None = None,
        choices: tuple | None = None, aliases: dict | None = None, nonempty: bool = False) -> Any:
    """A config field with its limits: ``low`` <= value, ``above`` < value, value <= ``high``,
    value in ``choices`` (after ``aliases`` map old names to new ones). For a list, each item."""
    meta = {"low": low, "above": above, "high": high, "choices": choices, "aliases": aliases or {},
            "nonempty": nonempty}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _limits(cls: type) -> dict[str, dict]:
    return {f.name: f.metadata for f in dataclasses.fields(cls)}


def limits_text(meta: dict) -> str:
    """A field's limits in words (``>= 0 and <= 1``, ``one of: a, b``); empty when it has none."""
    parts = []
    if meta.get("choices"):
        parts.append("one of: " + ", ".join(repr(c) if c == "" else str(c) for c in meta["choices"]))
    for key, sign in (("low", ">="), ("above", ">"), ("high", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{sign} {meta[key]:g}")
    if meta.get("nonempty"):
        parts.append("not empty")
    text = " and ".join(parts)
    if meta.get("aliases"):
        text += " (old names: " + ", ".join(f"{a} = {b}" for a, b in meta["aliases"].items()) + ")"
    return text


def _allowed(meta: dict) -> str:
    return limits_text({**meta, "aliases": None, "nonempty": False}) or "a valid value"


def _check_value(value: Any, meta: dict, key: str) -> Any:
    """``value`` (one item) within the field's limits; aliases mapped to their current name."""
    if not meta:
        return value
    if isinstance(value, str):
        value = meta.get("aliases", {}).get(value, value)
    bad = False
    if isinstance(value, float) and not math.isfinite(value):
        bad = True
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        bad = ((meta.get("low") is not None and value < meta["low"])
               or (meta.get("above") is not None and value <= meta["above"])
               or (meta.get("high") is not None and value > meta["high"]))
    if meta.get("choices") and value not in meta["choices"]:
        bad = True
    if bad:
        finite = "a finite number " if isinstance(value, float) and meta.get("choices") is None else ""
        raise SfdaError(f"config key '{key}' = {value!r} is not allowed; it must be {finite}{_allowed(meta)}")
    return value


def _coerce_one(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SfdaError(f"config key '{key}' is a section; give a mapping, not {value!r}")
        return _merge(tp(), value, prefix=key + ".")
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        section = _section_type(tp)
        if section is None:
            return dict(value)
        return {str(k): _coerce_one(v, section, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "yes", "1"):
                return True
            if value.lower() in ("false", "no", "0"):
                return False
            raise TypeError
        if not isinstance(value, (bool, int)):
            raise TypeError
        return bool(value)
    if tp in (int, float):
        if isinstance(value, bool) or value is None:
            raise TypeError
        out = tp(value)
        if tp is int and out != float(value):
            raise TypeError
        return out
    if tp is str:
        return "" if value is None else str(value).strip()
    return value


def _coerce(value: Any, tp: Any, key: str, meta: dict | None = None) -> Any:
    meta = meta or {}
    try:
        if typing.get_origin(tp) is list:
            if isinstance(value, str):  # "A1, B1" from a command line: spaces around names are not names
                value = [v.strip() for v in value.split(",") if v.strip()] if value else []
            if not isinstance(value, (list, tuple)):
                raise TypeError
            (item,) = typing.get_args(tp) or (Any,)
            out = [_check_value(_coerce_one(v, item, key), meta, key) for v in value]
            if meta.get("nonempty") and not out:
                raise SfdaError(f"config key '{key}' is empty; give at least one value")
            return out
        return _check_value(_coerce_one(value, tp, key), meta, key)
    except (TypeError, ValueError, OverflowError):
        name = getattr(tp, "__name__", str(tp))
        raise SfdaError(f"config key '{key}' expects {name}, got {value!r}") from None


def _section_type(tp: Any) -> type | None:
    """The section class of a ``dict[str, Section]`` field (named sections), else None."""
    args = typing.get_args(tp)
    return args[1] if len(args) == 2 and dataclasses.is_dataclass(args[1]) else None


def _merge_sections(current: dict, values: dict, section: type, prefix: str) -> None:
    """Named sections merge key by key: ``domains.ct.test=[...]`` changes one field of one section."""
    for name, value in values.items():
        name = str(name)
        if name in current and isinstance(value, dict):
            _merge(current[name], value, prefix=f"{prefix}{name}.")
        else:
            current[name] = _coerce(value, section, f"{prefix}{name}")


def _merge(cfg: Any, values: dict, prefix: str = "") -> Any:
    types, limits = _field_types(type(cfg)), _limits(type(cfg))
    for key, value in values.items():
        if key not in types and key in getattr(type(cfg), "FILLED", {}):
            raise SfdaError(f"config key '{prefix}{key}' cannot be set here: {type(cfg).FILLED[key]}")
        if key not in types:
            valid = ", ".join(prefix + k for k in types)
            near = _nearest(type(cfg), prefix, key, value)
            raise SfdaError(f"unknown config key '{prefix}{key}'{near}; valid keys: {valid}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _merge(current, value, prefix=f"{prefix}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict) and _section_type(types[key]):
            _merge_sections(current, value, _section_type(types[key]), f"{prefix}{key}.")
        else:
            setattr(cfg, key, _coerce(value, types[key], prefix + key, limits[key]))
    return cfg


def _dotted(cls: type, prefix: str = "") -> list[str]:
    out = []
    for name, tp in _field_types(cls).items():
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out += _dotted(tp, f"{prefix}{name}.")
    return out


def _nearest(cls: type, prefix: str, key: str, value: Any = None) -> str:
    """' (did you mean ...?)' naming the keys closest to the unknown one (a typo, or a key of a
    nested section given at the wrong level or in another section), or nothing."""
    keys = _dotted(cls, prefix)
    inner = list(value) if isinstance(value, dict) else []  # slicing.dims=3 where the section is data
    near = [k for k in keys if k.rsplit(".", 1)[-1] == key or (inner and k.rsplit(".", 1)[-1] == inner[0])]
    near += [k for k in difflib.get_close_matches(prefix + key, keys, n=2, cutoff=0.75) if k not in near]
    return f" (did you mean {' or '.join(repr(k) for k in near[:2])}?)" if near else ""


def merge_into(cfg: Any, values: dict, prefix: str = "") -> Any:
    """Apply a mapping of (nested) values to ``cfg`` with the same checks as a config file."""
    return check_sections(_merge(cfg, values, prefix), prefix)


def check_sections(cfg: Any, prefix: str = "") -> Any:
    """Each section's rules across its fields (its ``check(prefix)``, :mod:`sfda.config.rules`), once
    every value is merged; ``cfg``."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        sections = value.items() if isinstance(value, dict) else [("", value)]
        for name, section in sections:
            if dataclasses.is_dataclass(section):
                check_sections(section, f"{prefix}{f.name}.{name + '.' if name else ''}")
    if hasattr(cfg, "check"):
        cfg.check(*([prefix] if prefix else []))
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=1e-4`` -> (["optim", "lr"], 1e-4); values are read as YAML."""
    if "=" not in text:
        raise SfdaError(f"override '{text}' is not key=value (e.g. optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def nest(path: list[str], value: Any) -> dict:
    out: dict = {}
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


def load_config(cls: type, path: str | None = None, overrides: list[str] = (), base: dict | None = None):
    """Build ``cls`` from defaults, then ``base``, then the YAML file, then the overrides."""
    cfg = cls()
    if base:
        _merge(cfg, base)
    if path:
        _merge(cfg, read_yaml(path))
    for text in overrides:
        keys, value = parse_override(text)
        _merge(cfg, nest(keys, value))
    return check_sections(cfg)


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SfdaError(f"config file {p} not found; check the path")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SfdaError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SfdaError(f"config file {p} must hold a mapping of keys to values")
    return data


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    from sfda.io.atomic import write_text

    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

"""Typed configs: dataclass defaults, then a YAML file, then dotted ``key=value`` overrides.

Unknown keys are refused with the list of valid ones, values are coerced to the
field's type, and :func:`config_to_dict` gives the merged config that every
stage writes beside its outputs (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sfda.errors import SfdaError


@dataclass
class DataConfig:
    """Which images a stage reads and how volumes become 2D slices."""

    cases: str = ""
    modality: str = ""
    subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)
    axis: int = 0
    pad_multiple: int = 16
    clip_low: float = 0.5
    clip_high: float = 99.5
    cache: str = ""


@dataclass
class OptimConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    epochs: int = 20
    batch_size: int = 12
    max_steps_per_epoch: int = 0
    # torch.compile the training step's network: 1.6x faster steps on this 2-core CPU (ENet, 128x128)
    # after ~3.5 min of compiling, so it pays only on long runs (bench/throughput.py --compile).
    compile: bool = False


@dataclass
class MethodConfig:
    """Every method's knobs in one place; each method reads only its own."""

    name: str = "adaent"
    lam: float = 1.0
    kl: str = "paper"
    # "image": one KL per image (the paper); "batch": one KL on the batch's pooled ratios.
    kl_scope: str = "image"
    class_weighted_entropy: bool = False
    bn: str = "target"
    adabn_init: bool = False
    adv_weight: float = 1e-3
    disc_lr: float = 1e-4
    source_modality: str = ""
    source_subjects: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """``sfda train-source`` (and the Oracle, trained on target labels)."""

    data: DataConfig = field(default_factory=DataConfig)
    net: str = "enet"
    net_args: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: bool = True
    # Source-side shape-over-contrast augmentation (sfda.engine.loop.augment_intensity): the probability
    # of mirroring an image's intensities, and of a random piecewise-linear intensity curve (0 = never).
    invert: float = 0.0
    remap: float = 0.0
    seed: int = 0
    device: str = "cpu"
    out: str = ""
    resume: bool = False


@dataclass
class PriorTrainConfig:
    """``sfda train-prior``: the class-ratio regressor."""

    data: DataConfig = field(default_factory=DataConfig)
    net: str = "regressor"
    # width 64 + cosine + 60 epochs: validation MAE 0.0196 / 0.0197 (seeds 0 / 1) on slices with disc,
    # against 0.0234 for width 32, constant lr, 30 epochs (crops, opp, A1-D1 -> E1-F1)
    net_args: dict[str, Any] = field(default_factory=lambda: {"width": 64})
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, epochs=60, schedule="cosine"))
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    out: str = ""
    resume: bool = False


@dataclass
class AdaptConfig:
    """``sfda adapt``: start from a source checkpoint, adapt on target slices."""

    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: str = ""
    prior: str = ""
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, epochs=10))
    # Which epoch `selected.pt` holds, chosen without target labels (see sfda.engine.selection).
    select: str = "last"
    seed: int = 0
    device: str = "cpu"
    out: str = ""
    resume: bool = False


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    try:
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise SfdaError(f"config key '{key}' is a section; give a mapping, not {value!r}")
            return _merge(tp(), value, prefix=key + ".")
        if origin is list:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v] if value else []
            (item,) = typing.get_args(tp) or (Any,)
            return [_coerce(v, item, key) for v in value]
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1"):
                    return True
                if value.lower() in ("false", "no", "0"):
                    return False
                raise TypeError
            return bool(value)
        if tp in (int, float):
            if isinstance(value, bool):
                raise TypeError
            out = tp(value)
            if tp is int and out != float(value):
                raise TypeError
            return out
        if tp is str:
            return "" if value is None else str(value)
        return value
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        raise SfdaError(f"config key '{key}' expects {name}, got {value!r}") from None


def _merge(cfg: Any, values: dict, prefix: str = "") -> Any:
    types = _field_types(type(cfg))
    for key, value in values.items():
        if key not in types:
            valid = ", ".join(prefix + k for k in types)
            raise SfdaError(f"unknown config key '{prefix}{key}'; valid keys: {valid}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _merge(current, value, prefix=f"{prefix}{key}.")
        else:
            setattr(cfg, key, _coerce(value, types[key], prefix + key))
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
    return cfg


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

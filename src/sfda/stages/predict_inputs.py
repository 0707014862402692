"""What ``sfda predict`` reads and writes: its inputs as scans (each one file per channel of the
model) and every scan's output file names."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sfda.config import PredictConfig
from sfda.errors import SfdaError
from sfda.io.cases import channel_files, channels_of, load_cases, missing_channels
from sfda.io.volume import SUPPORTED_SUFFIXES, is_volume_path, volume_suffix

#: nnU-Net's channel suffix: ``case_0000.nii.gz`` is channel 0 of case ``case``
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def collect_inputs(inputs: list[str], modality: str | None) -> list[list[Path]]:
    """Scans from files, folders (their volume files) or case lists (the model's modality), each as its
    channel files in the network's order: one file, or, for a model with several channels (a modality
    joined by ``+``), one file per channel, grouped by nnU-Net's naming (``case_0000``, ``case_0001``...)."""
    names = channels_of(modality or "")
    scans: list[list[Path]] = []
    loose: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.suffix == ".json":
            cl = load_cases(p)
            missing = missing_channels(modality, cl.modalities)
            if missing:
                raise SfdaError(f"case list {p} has no modality '{missing[0]}' (the checkpoint's); "
                                f"it has: {', '.join(cl.modalities)}")
            scans += [[Path(f) for f in channel_files(c, modality)] for c in cl.cases]
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if is_volume_path(f))
            if not found:
                raise SfdaError(f"folder {p} holds no volume files ({', '.join(SUPPORTED_SUFFIXES)})")
            loose += found
        elif p.exists():
            loose.append(p)
        else:
            raise SfdaError(f"input {p} not found; give volume files, folders or a case list")
    scans += [[f] for f in loose] if len(names) <= 1 else channel_groups(loose, names)
    if not scans:
        raise SfdaError("no input volumes given")
    return scans


def channel_groups(files: list[Path], names: list[str]) -> list[list[Path]]:
    """Files named as nnU-Net names a scan's channels (``case_0000``...), grouped per case (and folder),
    each group checked to hold exactly the model's channels 0..C-1."""
    groups: dict[tuple[str, str], dict[int, Path]] = {}
    for f in files:
        m = _CHANNEL.match(stem(f))
        if m is None:
            raise SfdaError(f"{f}: this model takes {len(names)} channels ({', '.join(names)}), read from one file "
                            "per channel named as nnU-Net names them (case_0000, case_0001, ...); rename the files, "
                            "or give a case list")
        key = (os.path.realpath(f.parent), m.group(1) + volume_suffix(f))
        groups.setdefault(key, {})[int(m.group(2))] = f
    out = []
    for (_, case), channels in sorted(groups.items()):
        wanted = set(range(len(names)))
        if set(channels) != wanted:
            first = next(iter(channels.values()))
            lacking = sorted(wanted - set(channels))
            raise SfdaError(f"scan {first.parent / case}: the model takes channels 0..{len(names) - 1} "
                            f"({', '.join(names)}); " + (f"channel {lacking[0]} ({names[lacking[0]]}) is missing"
                                                         if lacking else f"channel {max(channels)} is one too many")
                            + "; give each scan's files for every channel, and no others")
        out.append([channels[k] for k in range(len(names))])
    return out


def stem(path: Path) -> str:
    return path.name[: -len(volume_suffix(path))]


def output_files(files: list[Path], label_names: list[str], cfg: PredictConfig, out_dir: Path) -> list[dict]:
    """Every input's output files (``files``: each scan's first channel), each name used once. A mask is
    ``<name>_seg<ext>``, or, where every input follows nnU-Net's naming (``case_0000.nii.gz``),
    ``case<ext>`` as nnU-Net writes it. Inputs that share a name are told apart by their folders
    (``d1/scan``, ``d2/scan`` -> ``d1_scan``, ``d2_scan``)."""
    stems = [stem(f) for f in files]
    channels = [_CHANNEL.match(s) for s in stems]
    nnunet = all(channels)
    names = [m.group(1) for m in channels] if nnunet else stems
    names = _apart(files, names)
    rows, owner = [], {}
    for path, name in zip(files, names):
        ext = volume_suffix(path)
        row = {"mask": out_dir / (f"{name}{ext}" if nnunet else f"{name}_seg{ext}"),
               "entropy": out_dir / f"{name}_entropy{ext}" if cfg.entropy else None,
               "probabilities": [out_dir / f"{name}_prob_{c}{ext}" for c in label_names] if cfg.probabilities else []}
        for out in [o for o in (row["mask"], row["entropy"], *row["probabilities"]) if o is not None]:
            if out.name in owner:
                raise SfdaError(f"inputs {owner[out.name]} and {path} would both be written as {out.name}; give "
                                "each scan once (a single-channel model reads one file per scan: with nnU-Net "
                                "naming, _0000)")
            owner[out.name] = path
        rows.append(row)
    return rows


def _apart(files: list[Path], names: list[str]) -> list[str]:
    """Names shared by several inputs get as many of their folders' names as tell them apart."""
    parents = [Path(os.path.realpath(f)).parent.parts for f in files]
    out = list(names)
    for depth in range(1, max(len(p) for p in parents)):
        shared = {n for n in out if out.count(n) > 1}
        if not shared:
            return out
        out = ["_".join([*parents[i][-depth:], names[i]]) if out[i] in shared else out[i] for i in range(len(files))]
    return names  # inputs of one folder with one name (channels of one case): refused by the caller

"""The nnU-Net raw layout: dataset.json plus imagesTr/ and labelsTr/."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sfda.errors import SfdaError
from sfda.io.cases import CHANNEL_SEP
from sfda.io.layouts.common import _Entry, _entry, _first_existing, _Found


def _find_nnunet(root: Path, pattern: str | None, label_pattern: str | None) -> _Found:
    """nnU-Net raw: dataset.json + imagesTr/<case>_<XXXX><ending> + labelsTr/<case><ending>."""
    meta_path = root / "dataset.json"
    meta = _read_dataset_json(meta_path)
    channels = nnunet_channels(meta, meta_path)
    label_names = _nnunet_labels(meta, meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    image_re = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending))
    entries: dict[str, _Entry] = {}
    for f in sorted((root / "imagesTr").glob("*")):
        m = image_re.fullmatch(f.name)
        if not m:
            continue
        channel = str(int(m["channel"]))
        if channel not in channels:
            raise SfdaError(
                f"{f} is channel {channel} but {meta_path} declares channels "
                f"{', '.join(sorted(channels))}; fix channel_names or remove the file"
            )
        _entry(entries, m["case"], m["case"]).add_image(channels[channel], f)
    for case_id, e in entries.items():
        e.label = _first_existing(root / "labelsTr" / f"{case_id}{ending}")
    order = [channels[k] for k in sorted(channels, key=int)]
    return _Found(list(entries.values()), label_names=label_names, modality_order=order)


def _read_dataset_json(path: Path) -> dict:
    if not path.is_file():
        raise SfdaError(
            f"{path} not found; the nnunet layout needs nnU-Net's dataset.json (or choose another "
            "--layout)"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SfdaError(f"{path} is not valid JSON ({exc}); fix the file") from exc
    if not isinstance(meta, dict):
        raise SfdaError(
            f"{path} must hold a JSON object with channel_names, labels, file_ending; fix the file"
        )
    return meta


def channel_order(meta: dict, path: Path) -> list[str]:
    """A dataset.json's channel names in input order (checked by :func:`nnunet_channels`)."""
    channels = nnunet_channels(meta, path)
    return [channels[k] for k in sorted(channels, key=int)]


def nnunet_channels(meta: dict, path: Path) -> dict[str, str]:
    """A dataset.json's channel names, checked: {"0": "T2", "1": "ADC"}, numbered 0..C-1, each name its own
    and without the '+' that joins channels; nnU-Net v1 called it "modality"."""
    raw = meta.get("channel_names", meta.get("modality"))
    if not isinstance(raw, dict) or not raw:
        raise SfdaError(f'{path} has no channel_names (e.g. {{"0": "T2"}}); add them')
    try:
        channels = {str(int(k)): str(v) for k, v in raw.items()}
    except ValueError:
        raise SfdaError(
            f'{path}: channel_names keys must be channel numbers ("0", "1"...); fix them'
        ) from None
    if sorted(int(k) for k in channels) != list(range(len(channels))):
        raise SfdaError(f"{path}: channel_names must number the channels 0..{len(channels) - 1}; fix them")
    if len(set(channels.values())) != len(channels):
        raise SfdaError(
            f"{path}: channel_names has repeated names {sorted(channels.values())}; give each "
            "channel its own name"
        )
    joined = [v for v in channels.values() if CHANNEL_SEP in v]
    if joined:
        raise SfdaError(f"{path}: channel name {joined[0]!r} holds '{CHANNEL_SEP}', which sfda reads as two "
                        "channels joined; rename the channel")
    return channels


def _nnunet_labels(meta: dict, path: Path) -> list[str]:
    """Label names by value from {"background": 0, "disc": 1} (v2) or {"0": "background"} (v1)."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise SfdaError(f'{path} has no labels (e.g. {{"background": 0, "disc": 1}}); add them')
    if all(isinstance(v, str) for v in raw.values()) and all(str(k).isdigit() for k in raw):
        by_value = {int(k): v for k, v in raw.items()}
    else:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
            raise SfdaError(
                f"{path}: labels must map names to single integer values (region labels are not "
                "supported); fix them"
            )
        by_value = {v: str(k) for k, v in raw.items()}
    if sorted(by_value) != list(range(len(by_value))):
        raise SfdaError(
            f"{path}: label values must be 0..{len(by_value) - 1} without gaps, got "
            f"{sorted(by_value)}; fix them"
        )
    return [by_value[v] for v in range(len(by_value))]

"""What ``sfda predict`` writes beside the masks for a person to read.

- ``labels.json``: each mask value's structure, as nnU-Net's ``dataset.json`` ``labels``
  (``{"background": 0, "liver": 1, ...}``), from the checkpoint's label names;
- ``volumes.csv``: one row per scan: its mask file, each structure's volume in mL (voxel count x
  the scan's voxel volume), each structure's scatter (the share of its voxels outside its largest
  connected piece, :mod:`sfda.metrics.components`), why the scan is far from the model's training
  scans (if it is), the structures warned about as scattered, those warned about as under half their
  smallest training volume (:mod:`sfda.metrics.plausibility`) and,
  with ``--adapt``, the safety net's decision and warnings (the record ``adapt.jsonl`` holds).

``volumes.csv`` is rebuilt from the masks on disk at the end of every run, so after
``--continue`` it still holds one row per scan, the masks of the earlier run included.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


from sfda.io.atomic import write_json, write_text
from sfda.io.volume import read_volume
from sfda.config.card import SourceStats
from sfda.metrics.components import scatter, scattered, scattered_line
from sfda.metrics.plausibility import undersized, undersized_line, volumes_ml
from sfda.progress import say

LABELS = "labels.json"
VOLUMES = "volumes.csv"


def _adapt_records(out: Path) -> dict[str, dict]:
    """The last record of each mask (by file name) in ``adapt.jsonl`` (``adapt.I-of-N.jsonl`` per
    share under torchrun or --shard)."""
    records = [json.loads(line) for path in sorted(out.glob("adapt*.jsonl"))
               for line in path.read_text().splitlines() if line.strip()]
    return {Path(r["mask"]).name: r for r in records if r.get("mask")}


def write_summaries(out: Path, scans: list[tuple[Path, Path]], label_names: list[str], far: dict[Path, list[str]],
                    adapt: bool, source: SourceStats | None = None) -> None:
    """``labels.json`` and ``volumes.csv`` in ``out`` for ``scans`` (input, mask) whose masks are on
    disk; ``far``: each input's reasons to be far from the training scans; ``source``: the model card's
    label statistics (a structure whose mask is scattered while its labels are one piece,
    :mod:`sfda.metrics.components`, or under half its smallest training volume,
    :mod:`sfda.metrics.plausibility`, is warned about)."""
    source = source or SourceStats()
    write_json(out / LABELS, {name: k for k, name in enumerate(label_names)})
    records = _adapt_records(out) if adapt else {}
    header = ["scan", "mask", *(f"{name}_ml" for name in label_names[1:]),
              *(f"{name}_scatter" for name in label_names[1:]), "far_from_training", "scattered", "undersized"]
    header += ["decision", "warnings"] if adapt else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for scan, mask in scans:
        if not mask.exists():
            continue
        vol = read_volume(mask, dtype=None, check_finite=False)
        ml = volumes_ml(vol.array, vol.spacing, len(label_names))
        spread = scatter(vol.array, len(label_names))
        warned = scattered(spread, source.pieces, label_names[1:])
        small = undersized(ml, source.volumes, label_names[1:])
        for line in [scattered_line(*w) for w in warned] + [undersized_line(*w) for w in small]:
            say(f"warning: {mask.name}: {line}")
        row = [str(scan), mask.name, *(f"{v:.3f}" for v in ml), *("" if v is None else f"{v:.3f}" for v in spread),
               "; ".join(far.get(scan, [])), "; ".join(name for name, _ in warned),
               "; ".join(name for name, *_ in small)]
        if adapt:
            record = records.get(mask.name, {})
            row += [record.get("decision", ""), "; ".join(record.get("warnings", []))]
        writer.writerow(row)
    write_text(out / VOLUMES, buf.getvalue())

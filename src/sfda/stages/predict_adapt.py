"""``sfda predict --adapt METHOD``: adapt to each scan on its own slices, then predict it.

Episodic mode starts every scan from the source model, so a scan's mask does not depend on
which scans came before it (its random batches follow its own seed). Continual mode carries the
adapted model on to the next scan, and starts again from the source model after a scan the
safety net (:mod:`sfda.metrics.scan_check`) distrusted. Each scan adds one JSON line to
``OUT/adapt.jsonl``: steps, losses, fractions, the safety net's decision and the time taken.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from sfda.config import PredictConfig
from sfda.data.patches import RandomPatches, check_patch_method, model_patch
from sfda.data.slices import relative_positions
from sfda.engine.checkpoint import require_single
from sfda.engine.tta import adapt_scan
from sfda.errors import SfdaError
from sfda.inference import predict_slices, scan_slices
from sfda.io.volume import read_header
from sfda.methods import build_method
from sfda.metrics.scan_check import scan_flags, scan_signals
from sfda.nets.merge import StructureMerge, taken_classes
from sfda.priors.estimate import prior_from_table
from sfda.priors.table import load_prior
from sfda.progress import say
from sfda.stages.source import Source


class ScanAdapter:
    """Holds the source model and, in continual mode, the model carried from scan to scan."""

    def __init__(self, source: Source, cfg: PredictConfig):
        require_single(source.card, source.path, "--adapt")
        self.source, self.card, self.cfg = source.model.eval(), source.card, cfg
        self.method = build_method(cfg.adapt, dataclasses.replace(cfg.method, name=cfg.adapt))
        self.carried: torch.nn.Module | None = None
        self.volumetric, self.patch = self.card.slicing.volumetric, model_patch(self.card)
        if self.patch:
            check_patch_method(self.method, cfg.method.kl_scope, self.patch)
        if self.volumetric and self.method.needs_prior and not cfg.prior:
            raise SfdaError(f"--adapt {cfg.adapt} on a 3D model ({source.path}) needs --prior TABLE with a row "
                            "<file stem>:volume per scan (e.g. case_0000:volume, then the class ratios you expect); or use tent")
        if self.method.needs_prior and not cfg.prior and not self.card.source.position:
            raise SfdaError(f"--adapt {cfg.adapt} needs a prior, and checkpoint {source.path} carries no "
                            "position statistics (imported from elsewhere, or trained before sfda stored them): give "
                            "--prior TABLE (rows <file stem>:<slice>) or train the source model again")

    def check_prior(self, files: list[Path], stems: list[str]) -> None:
        """Before the first mask is written: the prior table has a row for every slice of every scan."""
        if self.cfg.prior:
            axis = self.card.slicing.axis
            for path, stem in zip(files, stems):
                self.prior(stem, 1 if self.volumetric else read_header(path)[0][axis])

    def prior(self, stem: str, n: int) -> np.ndarray | None:
        """τe of the scan's slices (also for methods that need none: the safety net reads it)."""
        if not self.cfg.prior and not self.card.source.position:
            return None
        k = len(self.card.labels)
        if self.cfg.prior:
            rows = [f"{stem}:volume"] if self.volumetric else [f"{stem}:{i}" for i in range(n)]
            return load_prior(self.cfg.prior, rows, k)
        return prior_from_table(self.card.source.position, relative_positions(np.arange(n), np.full(n, n)))

    def __call__(self, scan: list[Path], stem: str, spacing, arrays: list) -> tuple[torch.nn.Module, dict]:
        """Adapt to one scan (``arrays``, one per channel, read from the files ``scan``; ``spacing``
        its voxel spacing); returns the model whose mask to write and the scan's JSON record."""
        t0, cfg, path = time.perf_counter(), self.cfg, scan[0]
        images, valid = scan_slices(self.card.slicing, arrays, [str(p) for p in scan], spacing)
        tau = self.prior(stem, len(images))
        start = self.carried if cfg.mode == "continual" and self.carried is not None else self.source
        model = copy.deepcopy(start)
        seed = (cfg.seed * 1_000_003 + zlib.crc32(stem.encode())) % (2**31)
        run = adapt_scan(model, self.method, images, valid, tau if self.method.needs_prior else None, cfg.steps,
                         cfg.optim, seed, cfg.device, RandomPatches(self.patch) if self.patch else None)
        signals = scan_signals(predict_slices(self.source, images, device=cfg.device, probabilities=True),
                               predict_slices(model, images, device=cfg.device, probabilities=True),
                               valid, tau, self.card.source.atlas, self.card.slicing.axis if self.volumetric else None)
        flags = scan_flags(signals, list(self.card.labels))
        written, decision = self.decide(model, [c for c, _ in flags])
        self.carried = model if written is model else None
        record = {"scan": str(path), "method": cfg.adapt, "mode": cfg.mode, "steps": run["steps"],
                  "losses": run["losses"], **signals, "warnings": [line for _, line in flags], "decision": decision,
                  "seconds_adapt": run["seconds"], "seconds": time.perf_counter() - t0}
        said = "" if written is model else "; the source model's mask is written" + (
            "" if written is self.source else " for the structures it distrusts")
        for _, line in flags:
            say(f"warning: {path.name}: {line}{said}")
        return written, record

    def decide(self, model: torch.nn.Module, flagged: list[int]) -> tuple[torch.nn.Module, str]:
        """The model whose mask to write, given the distrusted classes, and the decision in words."""
        names = list(self.card.labels)
        classes = taken_classes(self.cfg.on_distrust, flagged, len(names))
        if not classes:
            return model, "adapted (distrusted, kept: on_distrust=keep)" if flagged else "adapted"
        if len(classes) == len(names) - 1:
            return self.source, "source (safety net)"
        return (StructureMerge(model, self.source, classes).eval(),
                f"source for {', '.join(names[c] for c in classes)} (safety net), adapted for the rest")


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")

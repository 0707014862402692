"""``sfda predict``: masks (and entropy / probabilities) written in each input's own geometry.

Only the checkpoint is needed: its model card says how to normalise and slice.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from sfda.config import PredictConfig, merge_into
from sfda.config.card import ModelCard
from sfda.engine.distributed import Dist, agree, barrier, check_device, context, device_for, gather
from sfda.errors import SfdaError
from sfda.inference import stream_volume
from sfda.io.cases import load_cases
from sfda.progress import bar, say
from sfda.data.profile import unfamiliar
from sfda.io.channels import check_channel_headers, read_channels
from sfda.io.volume import read_header, write_volume
from sfda.io.volume_scan import check_image_file
from sfda.nets.fold import fold_batchnorm
from sfda.nets.mirror import for_prediction
from sfda.stages.common import check_output, on_device, require, write_config
from sfda.stages.freshness import Stage
from sfda.stages.source import Adapting, Source, check_source, resolve_source
from sfda.stages.outputs import case_files, claim_folder
from sfda.stages.predict_inputs import collect_inputs, output_files, stem
from sfda.stages.predict_outputs import write_summaries


def _predict_one(model, card: ModelCard, scan: list[Path], cfg: PredictConfig, files: dict, adapter=None) -> Path:
    """One scan (its channel files), streamed (its stored type in memory, one batch of slices at a time);
    returns its mask, written in the geometry of the scan's first channel. With ``adapter``
    (``--adapt``): the model adapted to this scan first (or the source model, if the
    safety net distrusts it), and the scan's record appended to ``adapt.jsonl``. The mask is written
    last, so a mask on disk means the scan is done (``--continue``)."""
    vol, arrays = read_channels(scan)  # scanned already; intensity_stats checks again
    if adapter is not None:
        from sfda.stages.predict_adapt import append_record

        model, record = adapter(scan, stem(scan[0]), vol.spacing, arrays)
    model = for_prediction(model, card, cfg.mirroring)  # mirrored as nnU-Net predicts, where the model allows it
    out = stream_volume(model, card.slicing, arrays, [str(p) for p in scan], cfg.device, entropy=cfg.entropy,
                        probabilities=cfg.probabilities, spacing=vol.spacing)
    if cfg.entropy:
        write_volume(files["entropy"], out.pop("entropy"), like=vol, dtype=np.float32)
    for k, prob_path in enumerate(files["probabilities"]):
        write_volume(prob_path, out["probabilities"][k], like=vol, dtype=np.float32)
    write_volume(files["mask"], out.pop("labels"), like=vol, dtype=np.uint8)
    if adapter is not None:
        append_record(files["record"], {**record, "mask": str(files["mask"])})
    return files["mask"]


def predict(cfg: PredictConfig | None = None, progress: bool = True, **options) -> list[Path]:
    """Write a mask per input scan (see :func:`sfda.stages.predict_inputs.output_files` for the names),
    plus entropy and probabilities if asked, ``labels.json``, ``volumes.csv``
    (:mod:`sfda.stages.predict_outputs`) and the merged
    config (``config.yaml``) in ``cfg.out``; with ``adapt`` also ``adapt.jsonl``.
    Returns the masks written by this call (``resume``: inputs whose mask is there are skipped; under
    torchrun, every rank's). ``shard`` and torchrun's ranks split the sorted inputs (:func:`share_of`):
    rank 0 claims the folder, the others wait for it; each mask is written by one process.
    ``options`` set config keys, checked as in a config file:
    ``sfda.predict(checkpoint=..., inputs=[...], out=..., adapt="adaent", steps=10)``."""
    cfg = merge_into(copy.deepcopy(cfg) if cfg is not None else PredictConfig(), options)
    require(cfg.checkpoint or cfg.nnunet, "--checkpoint (or --nnunet)")
    require(cfg.out, "--out")
    check_output(cfg.out)
    cfg = on_device(cfg)
    check_source(cfg, Adapting(cfg.adapt, cfg.method, cfg.prior, flag="--adapt", command="predict --adapt"))
    dist = context(check_device(device_for(cfg.device)))  # under torchrun: join the group
    index, count = share_of(cfg.shard, dist)
    if cfg.shard and cfg.overwrite:
        raise SfdaError(f"--overwrite with --shard {cfg.shard} would delete the other tasks' masks; empty "
                        f"{cfg.out} (or choose a new folder) before the job array starts")
    lists = [load_cases(p) for p in cfg.inputs if Path(p).suffix == ".json" and Path(p).is_file()]
    reads = [cfg.checkpoint, cfg.nnunet, cfg.prior, *cfg.inputs, *(f for cl in lists for f in case_files(cl))]
    run = Stage(cfg, [p for p in (cfg.checkpoint, cfg.prior) if p], command="predict")
    told = [False]  # whether rank 0 has told the other ranks it claimed the folder
    try:
        with claim_folder(cfg.out, run, reads, resume=cfg.resume, overwrite=cfg.overwrite, resume_flag="--continue",
                          share=cfg.shard):
            return _predict(cfg, progress and dist.main, dist, (index, count), told)
    except BaseException:
        if dist.active and dist.main and not told[0]:
            agree(dist, False)  # the other ranks stop instead of waiting for a claim that failed
        raise


def share_of(shard: str, dist: Dist) -> tuple[int, int]:
    """This process's share of the sorted inputs, (index, count): it predicts inputs index, index +
    count, ... ``--shard I/N`` takes share I of N; torchrun's ranks split that share again."""
    i, n = 0, 1
    if shard:
        parts = shard.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not int(parts[0]) < int(parts[1]):
            raise SfdaError(f"--shard {shard}: give I/N with 0 <= I < N, e.g. --shard 0/4 (the first of 4 tasks)")
        i, n = int(parts[0]), int(parts[1])
    return i + n * dist.rank, n * dist.world


def _predict(cfg: PredictConfig, progress: bool, dist: Dist, share: tuple[int, int], told: list) -> list[Path]:
    cfg.device = device_for(cfg.device)
    src = resolve_source(cfg, "predict") if dist.main else None  # rank 0 imports an nnU-Net folder, if given
    told[0] = True
    if not agree(dist, True):
        raise SfdaError(f"rank 0 could not start the run in {cfg.out} (its error says why); nothing written here")
    src = src or resolve_source(cfg, "predict", write=False)
    card, model, adapter = src.card, src.model, None
    if cfg.adapt:  # the batch-norm layers stay: the methods adapt them
        from sfda.stages.predict_adapt import ScanAdapter

        adapter = ScanAdapter(Source(model.to(cfg.device), card, src.path), cfg)
    else:
        model = fold_batchnorm(model).to(cfg.device)
    found = {os.path.realpath(s[0]): s for s in collect_inputs(cfg.inputs, card.modality or None)}
    scans = sorted(found.values(), key=lambda s: str(s[0]))  # one order for every share
    files = [s[0] for s in scans]
    outputs = output_files(files, list(card.labels), cfg, Path(cfg.out))
    index, count = share
    mine = [(s, o) for k, (s, o) in enumerate(zip(scans, outputs)) if k % count == index]
    far = _check_inputs([s for s, _ in mine], card, adapter)
    todo = [(f, o) for f, o in mine if not (cfg.resume and o["mask"].exists())]
    if len(todo) < len(mine):
        say(f"{len(mine) - len(todo)} of {len(mine)} masks are in {cfg.out} already (--continue): skipped")
    write_config(cfg, Path(cfg.out) / "config.yaml")
    record = Path(cfg.out) / ("adapt.jsonl" if count == 1 else f"adapt.{index}-of-{count}.jsonl")
    written = []
    for scan, out in bar(todo, "adapting and predicting" if adapter else "predicting", progress):
        written.append(_predict_one(model, card, scan, cfg, {**out, "record": record}, adapter))
    written = gather(written, dist)
    far = dict(gather(list(far.items()), dist))
    barrier(dist)  # every rank's masks are written before rank 0 sums them up and stamps the run done
    if dist.main:
        write_summaries(Path(cfg.out), [(f, o["mask"]) for f, o in zip(files, outputs)], list(card.labels), far,
                        bool(cfg.adapt), card.source)
    return written


def _check_inputs(scans: list[list[Path]], card: ModelCard, adapter) -> dict[Path, list[str]]:
    """Every input of this share checked before the first mask is written (each channel's file); returns
    why each scan (by its first channel's name) is far from the model's training scans."""
    far = {}
    for scan in scans:
        path = scan[0]
        ranges = [(s.low, s.high) for s in map(check_image_file, scan)]
        check_channel_headers(scan)
        shape, spacing = read_header(path)
        far[path] = unfamiliar(card.profile, spacing, shape, ranges)
        for why in far[path]:
            say(f"warning: {path.name} is far from the model's training scans: {why}; check its masks")
    if adapter is not None:
        adapter.check_prior([s[0] for s in scans], [stem(s[0]) for s in scans])
    return far

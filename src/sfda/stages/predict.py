"""``sfda predict``: masks (and entropy / probabilities) written in each input's own geometry.

Only the checkpoint is needed: its metadata says how to normalise and slice.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import numpy as np

from sfda.config import PredictConfig, merge_into
from sfda.engine.checkpoint import load_model, require_kind
from sfda.engine.distributed import check_device
from sfda.errors import SfdaError
from sfda.inference import fold_batchnorm, stream_volume
from sfda.io.cases import load_cases
from sfda.progress import bar, say
from sfda.data.profile import unfamiliar
from sfda.io.volume import is_volume_path, read_header, read_volume, volume_suffix, write_volume
from sfda.io.volume_scan import check_image_file
from sfda.nets.mirror import for_prediction
from sfda.stages.common import check_output, require, write_config
from sfda.stages.freshness import Stage
from sfda.stages.nnunet import check_source, resolve_source
from sfda.stages.outputs import case_files, claim_folder


def collect_inputs(inputs: list[str], modality: str | None) -> list[Path]:
    """Volume files from files, folders (their volume files) or case lists (the model's modality)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.suffix == ".json":
            cl = load_cases(p)
            if modality not in cl.modalities:
                raise SfdaError(f"case list {p} has no modality '{modality}' (the checkpoint's); "
                                f"it has: {', '.join(cl.modalities)}")
            out += [Path(c.images[modality]) for c in cl.cases]
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if is_volume_path(f))
            if not found:
                raise SfdaError(f"folder {p} holds no volume files (.nii, .nii.gz, .mha, .mhd, .nrrd)")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise SfdaError(f"input {p} not found; give volume files, folders or a case list")
    if not out:
        raise SfdaError("no input volumes given")
    return out


def _stem(path: Path) -> str:
    return path.name[: -len(volume_suffix(path))]


#: nnU-Net's channel suffix: ``case_0000.nii.gz`` is channel 0 of case ``case``
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def output_files(files: list[Path], label_names: list[str], cfg: PredictConfig, out_dir: Path) -> list[dict]:
    """Every input's output files, each name used once. A mask is ``<name>_seg<ext>``, or, where every
    input follows nnU-Net's naming (``case_0000.nii.gz``), ``case<ext>`` as nnU-Net writes it. Inputs
    that share a name are told apart by their folders (``d1/scan``, ``d2/scan`` -> ``d1_scan``, ``d2_scan``)."""
    stems = [_stem(f) for f in files]
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
                                "each scan once (sfda reads one channel per scan: with nnU-Net naming, _0000)")
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


def _predict_one(model, meta: dict, path: Path, cfg: PredictConfig, files: dict, adapter=None) -> Path:
    """One input, streamed (its stored type in memory, one batch of slices at a time); returns its mask.
    With ``adapter`` (``--adapt``): the model adapted to this scan first (or the source model, if the
    safety net distrusts it), and the scan's record appended to ``adapt.jsonl``. The mask is written
    last, so a mask on disk means the scan is done (``--continue``)."""
    vol = read_volume(path, dtype=None, check_finite=False)  # scanned already; intensity_stats checks again
    if adapter is not None:
        from sfda.stages.predict_adapt import append_record

        model, record = adapter(path, _stem(path), vol)
    model = for_prediction(model, meta, cfg.mirroring)  # mirrored as nnU-Net predicts, where the model allows it
    out = stream_volume(model, meta, vol.array, str(path), cfg.device, entropy=cfg.entropy,
                        probabilities=cfg.probabilities, spacing=vol.spacing)
    if cfg.entropy:
        write_volume(files["entropy"], out.pop("entropy"), like=vol, dtype=np.float32)
    for k, prob_path in enumerate(files["probabilities"]):
        write_volume(prob_path, out["probabilities"][k], like=vol, dtype=np.float32)
    write_volume(files["mask"], out.pop("labels"), like=vol, dtype=np.uint8)
    if adapter is not None:
        append_record(files["mask"].parent / "adapt.jsonl", {**record, "mask": str(files["mask"])})
    return files["mask"]


def predict(cfg: PredictConfig | None = None, progress: bool = True, **options) -> list[Path]:
    """Write a mask per input (see :func:`output_files` for the names), plus entropy and probabilities
    if asked, and the merged config (``config.yaml``) in ``cfg.out``; with ``adapt`` also ``adapt.jsonl``.
    Returns the masks written by this call (``resume``: inputs whose mask is there are skipped).
    ``options`` set config keys, checked as in a config file:
    ``sfda.predict(checkpoint=..., inputs=[...], out=..., adapt="adaent", steps=10)``."""
    cfg = merge_into(copy.deepcopy(cfg) if cfg is not None else PredictConfig(), options)
    require(cfg.checkpoint or cfg.nnunet, "--checkpoint (or --nnunet)")
    require(cfg.out, "--out")
    check_output(cfg.out)
    check_device(cfg.device)
    check_source(cfg)
    lists = [load_cases(p) for p in cfg.inputs if Path(p).suffix == ".json" and Path(p).is_file()]
    reads = [cfg.checkpoint, cfg.nnunet, cfg.prior, *cfg.inputs, *(f for cl in lists for f in case_files(cl))]
    run = Stage(cfg, [p for p in (cfg.checkpoint, cfg.prior) if p], command="predict")
    with claim_folder(cfg.out, run, reads, resume=cfg.resume, overwrite=cfg.overwrite, resume_flag="--continue"):
        return _predict(cfg, progress)


def _predict(cfg: PredictConfig, progress: bool) -> list[Path]:
    resolve_source(cfg)
    model, meta = load_model(cfg.checkpoint)
    require_kind(meta, "segmentation", cfg.checkpoint, "predict")
    adapter = None
    if cfg.adapt:  # the batch-norm layers stay: the methods adapt them
        from sfda.stages.predict_adapt import ScanAdapter

        adapter = ScanAdapter(model.to(cfg.device), meta, cfg)
    else:
        model = fold_batchnorm(model).to(cfg.device)
    files = list({os.path.realpath(f): f for f in collect_inputs(cfg.inputs, meta.get("modality"))}.values())
    for path in files:  # every input checked before the first mask is written
        summary = check_image_file(path)
        shape, spacing = read_header(path)
        for why in unfamiliar(meta.get("profile"), spacing, shape, summary.low, summary.high):
            say(f"warning: {path.name} is far from the model's training scans: {why}; check its masks")
    outputs = output_files(files, meta["label_names"], cfg, Path(cfg.out))
    if adapter is not None:
        adapter.check_prior(files, [_stem(f) for f in files])
    todo = [(f, o) for f, o in zip(files, outputs) if not (cfg.resume and o["mask"].exists())]
    if len(todo) < len(files):
        say(f"{len(files) - len(todo)} of {len(files)} masks are in {cfg.out} already (--continue): skipped")
    write_config(cfg, Path(cfg.out) / "config.yaml")
    written = []
    for path, out in bar(todo, "adapting and predicting" if adapter else "predicting", progress):
        written.append(_predict_one(model, meta, path, cfg, out, adapter))
    return written

"""``sfda predict``: masks (and entropy / probabilities) written in each input's own geometry.

Only the checkpoint is needed: its metadata says how to normalise and slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfda.config import PredictConfig
from sfda.engine.checkpoint import load_model, require_kind
from sfda.engine.distributed import check_device
from sfda.errors import SfdaError
from sfda.inference import entropy_map, fold_batchnorm, predict_volume
from sfda.io.cases import load_cases
from sfda.progress import bar
from sfda.io.volume import is_volume_path, read_volume, volume_suffix, write_volume
from sfda.stages.common import check_output, require, write_config


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


def predict(cfg: PredictConfig, progress: bool = True) -> list[Path]:
    """Write ``<name>_seg<ext>`` (uint8) per input, plus ``_entropy`` and ``_prob_<class>`` if asked,
    and the merged config (``config.yaml``) in ``cfg.out``."""
    require(cfg.checkpoint, "--checkpoint")
    require(cfg.out, "--out")
    check_output(cfg.out)
    check_device(cfg.device)
    model, meta = load_model(cfg.checkpoint)
    require_kind(meta, "segmentation", cfg.checkpoint, "predict")
    model = fold_batchnorm(model).to(cfg.device)
    files = collect_inputs(cfg.inputs, meta.get("modality"))
    written, out_dir = [], Path(cfg.out)
    for path in bar(files, "predicting", progress):
        vol = read_volume(path)
        probs = predict_volume(model, meta, vol.array, str(path), cfg.device)
        ext, stem = volume_suffix(path), _stem(path)
        mask_path = out_dir / f"{stem}_seg{ext}"
        write_volume(mask_path, probs.argmax(axis=0).astype(np.uint8), like=vol, dtype=np.uint8)
        written.append(mask_path)
        if cfg.entropy:
            write_volume(out_dir / f"{stem}_entropy{ext}", entropy_map(probs, axis=0).astype(np.float32),
                         like=vol, dtype=np.float32)
        if cfg.probabilities:
            for k, name in enumerate(meta["label_names"]):
                write_volume(out_dir / f"{stem}_prob_{name}{ext}", probs[k].astype(np.float32), like=vol,
                             dtype=np.float32)
    write_config(cfg, out_dir / "config.yaml")
    return written

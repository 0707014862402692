"""``sfda predict``: masks (and entropy / probabilities) written in each input's own geometry.

Only the checkpoint is needed: its metadata says how to normalise and slice.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from sfda.config import PredictConfig, merge_into
from sfda.engine.checkpoint import load_model, require_kind
from sfda.engine.distributed import check_device
from sfda.errors import SfdaError
from sfda.inference import fold_batchnorm, stream_volume
from sfda.io.cases import load_cases
from sfda.progress import bar
from sfda.io.volume import is_volume_path, read_volume, volume_suffix, write_volume
from sfda.io.volume_scan import check_image_file
from sfda.stages.common import check_output, require, write_config
from sfda.stages.nnunet import resolve_source


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


def _predict_one(model, meta: dict, path: Path, cfg: PredictConfig, out_dir: Path, adapter=None) -> Path:
    """One input, streamed (its stored type in memory, one batch of slices at a time); returns its mask.
    With ``adapter`` (``--adapt``): the model adapted to this scan first (or the source model, if the
    safety net distrusts it), and the scan's record appended to ``adapt.jsonl``."""
    vol = read_volume(path, dtype=None, check_finite=False)  # scanned already; intensity_stats checks again
    if adapter is not None:
        from sfda.stages.predict_adapt import append_record

        model, record = adapter(path, _stem(path), vol)
    out = stream_volume(model, meta, vol.array, str(path), cfg.device, entropy=cfg.entropy,
                        probabilities=cfg.probabilities, spacing=vol.spacing)
    ext, stem = volume_suffix(path), _stem(path)
    mask_path = out_dir / f"{stem}_seg{ext}"
    write_volume(mask_path, out.pop("labels"), like=vol, dtype=np.uint8)
    if cfg.entropy:
        write_volume(out_dir / f"{stem}_entropy{ext}", out.pop("entropy"), like=vol, dtype=np.float32)
    for k, name in enumerate(meta["label_names"] if cfg.probabilities else []):
        write_volume(out_dir / f"{stem}_prob_{name}{ext}", out["probabilities"][k], like=vol, dtype=np.float32)
    if adapter is not None:
        append_record(out_dir / "adapt.jsonl", {**record, "mask": str(mask_path)})
    return mask_path


def predict(cfg: PredictConfig | None = None, progress: bool = True, **options) -> list[Path]:
    """Write ``<name>_seg<ext>`` (uint8) per input, plus ``_entropy`` and ``_prob_<class>`` if asked,
    and the merged config (``config.yaml``) in ``cfg.out``; with ``adapt`` also ``adapt.jsonl``.
    ``options`` set config keys, checked as in a config file:
    ``sfda.predict(checkpoint=..., inputs=[...], out=..., adapt="adaent", steps=10)``."""
    cfg = merge_into(copy.deepcopy(cfg) if cfg is not None else PredictConfig(), options)
    require(cfg.checkpoint or cfg.nnunet, "--checkpoint (or --nnunet)")
    require(cfg.out, "--out")
    check_output(cfg.out)
    check_device(cfg.device)
    resolve_source(cfg)
    model, meta = load_model(cfg.checkpoint)
    require_kind(meta, "segmentation", cfg.checkpoint, "predict")
    adapter = None
    if cfg.adapt:  # the batch-norm layers stay: the methods adapt them
        from sfda.stages.predict_adapt import ScanAdapter

        adapter = ScanAdapter(model.to(cfg.device), meta, cfg)
    else:
        model = fold_batchnorm(model).to(cfg.device)
    files = collect_inputs(cfg.inputs, meta.get("modality"))
    for path in files:  # every input checked before the first mask is written
        check_image_file(path)
    if adapter is not None:
        adapter.check_prior(files, [_stem(f) for f in files])
    written, out_dir = [], Path(cfg.out)
    if adapter is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "adapt.jsonl").unlink(missing_ok=True)
    for path in bar(files, "adapting and predicting" if adapter else "predicting", progress):
        written.append(_predict_one(model, meta, path, cfg, out_dir, adapter))
    write_config(cfg, out_dir / "config.yaml")
    return written

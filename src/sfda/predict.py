"""``sfda predict``: masks (and entropy / probabilities) written in each input's own geometry.

Only the checkpoint is needed: its metadata says how to normalise and slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sfda.data.normalize import normalize_volume
from sfda.data.slices import from_slices, padded_size, slice_shape, to_slices
from sfda.engine.checkpoint import load_model, require_kind
from sfda.engine.infer import fold_batchnorm
from sfda.engine.loop import check_device
from sfda.errors import SfdaError
from sfda.io.cases import load_cases
from sfda.io.volume import is_volume_path, read_volume, volume_suffix, write_volume


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


@torch.inference_mode()
def predict_volume(model: torch.nn.Module, meta: dict, array: np.ndarray, source: str, device: str = "cpu",
                   batch_size: int = 12) -> np.ndarray:
    """Class probabilities (K, *shape) for one volume, float32."""
    norm, sl = meta["normalization"], meta["slicing"]
    img = normalize_volume(array, norm["clip_low"], norm["clip_high"], source=source)
    axis, mult = sl["axis"], sl["pad_multiple"]
    hw = tuple(padded_size(s, mult) for s in slice_shape(img.shape, axis))
    slices = to_slices(img, axis, hw, fill=float(img.min()))
    x = torch.from_numpy(np.ascontiguousarray(slices[:, None]))
    probs = []
    for start in range(0, len(x), batch_size):
        probs.append(torch.softmax(model(x[start:start + batch_size].to(device)).float(), dim=1).cpu())
    p = torch.cat(probs).numpy()  # (S, K, H, W)
    return np.stack([from_slices(p[:, k], axis, img.shape) for k in range(p.shape[1])])


def _stem(path: Path) -> str:
    return path.name[: -len(volume_suffix(path))]


def predict(checkpoint: str, inputs: list[str], out: str, entropy: bool = False,
            probabilities: bool = False, device: str = "cpu", progress: bool = True) -> list[Path]:
    """Write ``<name>_seg<ext>`` (uint8) per input, plus ``_entropy`` and ``_prob_<class>`` if asked."""
    check_device(device)
    model, meta = load_model(checkpoint)
    require_kind(meta, "segmentation", checkpoint, "predict")
    model = fold_batchnorm(model).to(device)
    files = collect_inputs(inputs, meta.get("modality"))
    written = []
    for path in tqdm(files, desc="predicting", disable=not progress, leave=False):
        vol = read_volume(path)
        probs = predict_volume(model, meta, vol.array, str(path), device)
        ext, stem, out_dir = volume_suffix(path), _stem(path), Path(out)
        mask_path = out_dir / f"{stem}_seg{ext}"
        write_volume(mask_path, probs.argmax(axis=0).astype(np.uint8), like=vol, dtype=np.uint8)
        written.append(mask_path)
        if entropy:
            p = np.clip(probs, 1e-12, 1.0)
            write_volume(out_dir / f"{stem}_entropy{ext}", -(p * np.log(p)).sum(axis=0).astype(np.float32),
                         like=vol, dtype=np.float32)
        if probabilities:
            for k, name in enumerate(meta["label_names"]):
                write_volume(out_dir / f"{stem}_prob_{name}{ext}", probs[k].astype(np.float32), like=vol,
                             dtype=np.float32)
    return written

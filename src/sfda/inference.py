"""The one inference module: a network's outputs over slices, batch by batch.

Validation, evaluation, prediction and the model-based priors all read from
:func:`iter_outputs`. Arrays: slices are (N, C, H, W) float32; labels (N, H, W)
uint8; probabilities (N, K, H, W) float32; a volume's probabilities (K, *shape).
"""

from __future__ import annotations

import numpy as np
import torch

from sfda.config.card import ModelCard, Slicing
from sfda.data.nnunet_prep import LOGIT_ORDER, prepare, prepare_slices, resample, target_spacing, uncrop
from sfda.data.normalize import apply_norm, volume_stats
from sfda.data.resample import grid_shape, in_plane, resize, resize_volume
from sfda.data.slices import pad_widths, padded_size, slice_shape, to_slices
from sfda.data.slices import crop_centre, pad_centre
from sfda.errors import SfdaError
from sfda.io.slabs import slabs, take

#: 3D samples (N, C, D, H, W) go through the network at most this many at a time (memory)
VOLUMES_PER_PASS = 2


@torch.inference_mode()
def iter_outputs(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64, device: str = "cpu"):
    """Yield ``(rows, output)`` over (N, C, H, W) slices in batches: ``rows`` the slice range,
    ``output`` the model's float32 output (logits, or a regressor's ratios), in eval mode
    (its mode is restored after)."""
    was_training = model.training
    model.eval()
    if np.ndim(images) == 5:
        batch_size = min(batch_size, VOLUMES_PER_PASS)
    try:
        for start in range(0, len(images), batch_size):
            rows = slice(start, min(start + batch_size, len(images)))
            x = torch.from_numpy(np.asarray(images[rows])).to(device)
            yield rows, model(x).float()
    finally:
        model.train(was_training)


def predict_slices(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64,
                   device: str = "cpu", probabilities: bool = False):
    """Softmax over (N, C, H, W) slices; returns argmax labels (N, H, W) uint8 and,
    if asked, probabilities (N, K, H, W) float32."""
    labels, probs = [], []
    for _, logits in iter_outputs(model, images, batch_size, device):
        labels.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
        if probabilities:
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.concatenate(labels), (np.concatenate(probs) if probabilities else None)


def channels(array, source) -> tuple[list[np.ndarray], list[str]]:
    """A scan as its channels: ``array`` one volume, or one per channel of a model that takes several
    (``source``: its file name, or one per channel)."""
    arrays = [array] if isinstance(array, np.ndarray) else list(array)
    sources = [source] * len(arrays) if isinstance(source, str) else list(source)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise SfdaError(f"the channels {', '.join(sources)} have shapes {sorted(shapes)}; the channels of one scan "
                        "must share one grid: re-export them")
    return arrays, sources


class _Grid:
    """How one scan meets the network: each channel's normalisation, slicing axis, native and network
    in-plane sizes, and the padded size (what the model card's ``slicing`` says training saw)."""

    def __init__(self, sl: Slicing, array, source, spacing: tuple | None):
        self.arrays, sources = channels(array, source)
        self.axis = sl.axis
        self.native = slice_shape(self.arrays[0].shape, self.axis)
        if sl.spacing and spacing is None:
            raise ValueError("this checkpoint resamples slices to a pixel spacing: pass the volume's spacing")
        self.stats = [volume_stats(a, clip, src) for a, clip, src in zip(self.arrays, sl.clips(len(self.arrays)),
                                                                         sources)]
        self.grid = grid_shape(self.native, in_plane(spacing or (1.0, 1.0, 1.0), self.axis), sl.size, sl.spacing)
        self.hw = tuple(padded_size(s, sl.pad_multiple) for s in self.grid)

    def slices(self, rows: slice | None = None) -> np.ndarray:
        """The scan's planes ``rows`` along the axis (all of them when None) as the network's (N, C, H, W) input."""
        out = []
        for array, stats in zip(self.arrays, self.stats):
            part = array if rows is None else take(array, self.axis, rows)
            planes = resize(np.moveaxis(apply_norm(part, stats), self.axis, 0), self.grid)
            out.append(to_slices(planes, 0, self.hw, fill=stats.floor))
        return np.ascontiguousarray(np.stack(out, axis=1))


class _Grid3:
    """How one volume meets a 3D network (``slicing.dims`` 3): its normalisation, its shape on the
    network's grid, the padded shape, and the window the network was trained on (a larger volume is
    predicted window by window: MONAI's sliding window, Gaussian-weighted). With ``slicing.preprocess``
    ``nnunet``, as nnU-Net's predictor: the non-zero box only, its spline resampling, the logits
    resampled back (sfda.data.nnunet_prep); so also for a 2D nnU-Net configuration, whose network then
    sees the prepared volume slice by slice (:func:`_plane_logits`)."""

    def __init__(self, sl: Slicing, array, source, spacing: tuple | None):
        if sl.spacing and spacing is None:
            raise ValueError("this checkpoint resamples volumes to a voxel spacing: pass the volume's spacing")
        self.arrays, sources = channels(array, source)
        clips = sl.clips(len(self.arrays))
        self.nnunet = sl.preprocess == "nnunet"
        self.full, self.spacing = tuple(self.arrays[0].shape), tuple(spacing or (1.0, 1.0, 1.0))
        self.target = target_spacing(self.spacing, sl.spacing, None if sl.volumetric else sl.axis)
        if self.nnunet:
            self.image, self.box, self.stats = prepare(self.arrays, clips, self.spacing, self.target, sources)
            self.grid = self.image.shape[1:]
        else:
            self.box = tuple(slice(0, n) for n in self.full)
            self.stats = [volume_stats(a, clip, src) for a, clip, src in zip(self.arrays, clips, sources)]
            self.grid = grid_shape(self.full, self.spacing, sl.size, sl.spacing)
        self.cropped = tuple(b.stop - b.start for b in self.box)
        self.shape = tuple(padded_size(s, sl.pad_multiple) for s in self.grid)
        self.window = tuple(sl.window or self.shape)

    def volume(self) -> np.ndarray:
        """The scan as the network's (1, C, D, H, W) input."""
        parts = self.image if self.nnunet else [resize_volume(apply_norm(a, st), self.grid)
                                                for a, st in zip(self.arrays, self.stats)]
        v = np.stack([pad_centre(part, self.shape, st.floor) for part, st in zip(parts, self.stats)])
        return np.ascontiguousarray(v[None], dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax (K, *volume shape) on the volume's own grid of the network's logits (K, *grid):
        probabilities resampled linearly; with nnU-Net's preprocessing, the logits resampled as nnU-Net
        does and the crop put back into background."""
        if not self.nnunet:
            return resize_volume(_softmax(logits), self.full)
        back = np.stack([resample(k, self.cropped, self.target, self.spacing, LOGIT_ORDER).astype(np.float32)
                         for k in logits])  # one class at a time in float64
        background = np.eye(len(logits), 1, dtype=np.float32)[:, 0]
        return uncrop(_softmax(back), self.box, self.full, background)


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), dim=0).numpy()


@torch.inference_mode()
def _volume_logits(model: torch.nn.Module, g: _Grid3, x: np.ndarray, device: str) -> np.ndarray:
    """Logits (K, *grid) of one (1, C, D, H, W) volume: whole when it fits the training window."""
    was_training = model.training
    model.eval()
    try:
        t = torch.from_numpy(x).to(device)
        if all(s <= w for s, w in zip(g.shape, g.window)):
            logits = model(t)
        else:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(t, roi_size=g.window, sw_batch_size=1, predictor=model,
                                              overlap=0.25, mode="gaussian")
        out = logits.float()[0].cpu().numpy()
    finally:
        model.train(was_training)
    return crop_centre(out, g.grid)


@torch.inference_mode()
def _plane_logits(model: torch.nn.Module, g: _Grid3, axis: int, batch_size: int, device: str) -> np.ndarray:
    """Logits (K, *grid) of a 2D network over the prepared volume's planes along ``axis``, a batch at a time."""
    planes = np.moveaxis(g.image, axis + 1, 0)  # (n, C, h, w)
    out = [logits.cpu().numpy() for _, logits in iter_outputs(model, planes, batch_size, device)]
    return np.moveaxis(np.concatenate(out), 0, axis + 1)


def _stream_volume3(model, slicing: Slicing, array, source, device: str, entropy: bool,
                    probabilities: bool, spacing, batch_size: int = 12) -> dict:
    """:func:`stream_volume` for a 3D network, or for a 2D network with nnU-Net's preprocessing: the
    whole (prepared) volume at once, probabilities resampled back to the volume's own grid before the
    argmax."""
    g = _Grid3(slicing, array, source, spacing)
    if slicing.volumetric:
        logits = _volume_logits(model, g, g.volume(), device)
    else:
        logits = _plane_logits(model, g, slicing.axis, batch_size, device)
    probs = g.probabilities(logits)
    out = {"labels": probs.argmax(axis=0).astype(np.uint8)}
    if entropy:
        out["entropy"] = entropy_map(probs, axis=0).astype(np.float32)
    if probabilities:
        out["probabilities"] = probs.astype(np.float32)
    return out


def scan_slices(slicing: Slicing, array, source, spacing: tuple | None = None):
    """All of one scan's slices as the network sees them (``slicing``: the model card's; ``array`` a
    volume, or one per channel, see :func:`channels`): (N, C, H, W) float32 and the (N, H, W) mask of
    real (unpadded) pixels; for a 3D network, the volume (1, C, D, H, W) and its mask."""
    if slicing.volumetric:
        g3 = _Grid3(slicing, array, source, spacing)
        return g3.volume(), pad_centre(np.ones(g3.grid, dtype=bool), g3.shape, False)[None]
    if slicing.preprocess == "nnunet":
        return _nnunet_slices(slicing, array, source, spacing)
    g = _Grid(slicing, array, source, spacing)
    valid = to_slices(np.ones((1, *g.grid), dtype=bool), 0, g.hw, fill=False)[0]
    images = g.slices()
    return images, np.ascontiguousarray(np.broadcast_to(valid, (len(images), *g.hw)))


def _nnunet_slices(slicing: Slicing, array, source, spacing: tuple | None):
    """:func:`scan_slices` for a 2D nnU-Net configuration: the scan prepared as nnU-Net does, every slice
    kept (sfda.data.nnunet_prep.prepare_slices); no padding, so every pixel is real."""
    if spacing is None:
        raise ValueError("nnU-Net's preprocessing resamples to the configuration's spacing: pass the volume's spacing")
    arrays, sources = channels(array, source)
    image = prepare_slices(arrays, slicing.clips(len(arrays)), tuple(spacing),
                           target_spacing(spacing, slicing.spacing, slicing.axis), sources, slicing.axis)[0]
    images = np.ascontiguousarray(np.moveaxis(image, slicing.axis + 1, 0))
    return images, np.ones((len(images), *images.shape[2:]), dtype=bool)


def stream_volume(model: torch.nn.Module, slicing: Slicing, array, source, device: str = "cpu",
                  batch_size: int = 12, entropy: bool = False, probabilities: bool = False,
                  spacing: tuple | None = None) -> dict:
    """One volume's ``labels`` (uint8, *shape) and, if asked, ``entropy`` (float32, *shape) and
    ``probabilities`` (float32, (K, *shape)), a batch of slices at a time (``array``: a volume, or one
    per channel of a model that takes several, with ``source`` one name per channel): apart from the outputs
    asked for, memory holds the volume in its stored type plus one batch (with nnU-Net's preprocessing,
    as nnU-Net's predictor, the whole prepared volume and its logits; see :mod:`sfda.data.normalize`
    for the statistics; ``slicing``: the model card's). A checkpoint trained on resampled slices
    (``slicing.size`` / ``slicing.spacing``; ``spacing`` is then the volume's voxel spacing) sees
    its slices resampled the same way, and its probabilities go back to the volume's own grid
    before the argmax."""
    if slicing.volumetric or slicing.preprocess == "nnunet":
        return _stream_volume3(model, slicing, array, source, device, entropy, probabilities, spacing, batch_size)
    g = _Grid(slicing, array, source, spacing)
    shape = g.arrays[0].shape
    out = {"labels": np.empty(shape, np.uint8)}
    if entropy:
        out["entropy"] = np.empty(shape, np.float32)
    for rows in slabs(shape, g.axis, voxels=batch_size * int(np.prod(g.hw)) // len(g.arrays)):
        slices = g.slices(rows)
        probs = crop_slices(predict_slices(model, slices, batch_size, device, probabilities=True)[1], g.grid)
        _store(out, resize(probs, g.native), g.axis, rows, probabilities)
    return out


def crop_slices(batch: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Undo :func:`to_slices`' centred padding on (N, K, H, W) outputs."""
    (b0, _), (b1, _) = pad_widths(hw, batch.shape[2:])
    return batch[:, :, b0:b0 + hw[0], b1:b1 + hw[1]]


def _store(out: dict, probs: np.ndarray, axis: int, rows: slice, probabilities: bool) -> None:
    """Write one batch's (N, K, h, w) probabilities into the output volumes at ``rows`` of ``axis``."""
    if probabilities and "probabilities" not in out:
        out["probabilities"] = np.empty((probs.shape[1], *out["labels"].shape), np.float32)
    np.moveaxis(out["labels"], axis, 0)[rows] = probs.argmax(axis=1)
    if "entropy" in out:
        np.moveaxis(out["entropy"], axis, 0)[rows] = entropy_map(probs, axis=1)
    if probabilities:
        np.moveaxis(out["probabilities"], axis + 1, 1)[:, rows] = probs.transpose(1, 0, 2, 3)


def entropy_map(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per-pixel entropy in nats of probabilities over ``axis`` (the class axis); the
    probability-space twin of :func:`sfda.losses.pixel_entropy`, which works on logits."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


def trust_signals(model: torch.nn.Module, images: np.ndarray, valid: np.ndarray, card: ModelCard,
                  num_classes: int, device: str = "cpu") -> dict:
    """The label-free signals of :mod:`sfda.metrics.trust` for ``model`` on (N, C, H, W) slices:
    flip agreement (for the classes where the source model passes the mirror test on its own
    training slices, when its card says), atlas share where the card carries its
    source atlas, and each structure's share of the pixels (for the vanish check)."""
    from sfda.metrics.trust import as_planes, atlas_share, calibrated_flip, class_fractions, flip_agreement

    axis = card.slicing.axis
    # volumes (N, C, D, H, W) are mirrored along the axis a slice's columns run along, then read as slices
    mirror = -1 if images.ndim == 4 or axis != 2 else -2
    pred = predict_slices(model, images, device=device)[0]
    flipped = predict_slices(model, np.ascontiguousarray(np.flip(images, mirror)), device=device)[0]
    if images.ndim == 5:
        pred, flipped, valid = (as_planes(a, axis) for a in (pred, flipped, valid))
    signals = {"flip_agreement": calibrated_flip(flip_agreement(pred, flipped, valid, num_classes),
                                                 card.source.flip),
               "fractions": class_fractions(pred, valid, num_classes), "pixels": int(valid.sum())}
    if card.source.atlas:
        signals["atlas_share"] = atlas_share(pred, valid, card.source.atlas)
    return signals

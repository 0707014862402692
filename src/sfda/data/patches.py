"""Random patches of whole volumes: what a model whose input is a patch adapts on.

A 3D nnU-Net configuration is trained on patches of its plans' ``patch_size`` and predicts a scan
patch by patch (:mod:`sfda.nets.nnunet_nets`); a whole abdominal CT at its full resolution does not
fit through it with gradients. So adaptation steps on one random patch of that size per volume of a
batch (:class:`RandomPatches`, a batch transform as in :mod:`sfda.data.transforms`), while
prediction, the trust check and the export still see whole scans.

Where a patch lies: uniformly at random among the positions that keep it inside the volume's own
voxels (the padding around a volume is left out); along an axis where the volume is shorter than the
patch, the patch is centred on the volume and its overhang is padding (zeros, masked out of every
loss). Voxels near a volume's border therefore fall in fewer patches than central ones.

What a patch's prior can be: a prior row is a whole volume's class ratios, and a patch holds its own
share of each structure (none at all, often), so AdaEnt's KL per patch would ask every patch for the
volume's amount. Pooled over the batch (``kl_scope: batch``) the KL compares the batch's patches
together with their volumes' ratios, which is right on average over random patches (up to the
border effect above) and noisy for small batches. Per-patch KL is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfda.config.card import ModelCard
from sfda.config.methods import said, source_free_methods
from sfda.errors import SfdaError


def model_patch(card: ModelCard) -> tuple[int, ...] | None:
    """The patch (in sfda's axis order) a 3D model's input is, or None: an nnU-Net 3D configuration's
    ``patch_size`` (in nnU-Net's order, ``axes`` naming sfda's axis for each of them)."""
    args = card.network.args or {}
    patch, axes = args.get("patch_size"), args.get("axes")
    if not card.slicing.volumetric or not patch or not axes or len(patch) != 3:
        return None
    out = [0, 0, 0]
    for own, size in zip(axes, patch):
        out[int(own)] = int(size)
    return tuple(out)


def check_patch_method(method, kl_scope: str, patch: tuple[int, ...]) -> None:
    """What cannot adapt on patches, refused with the reason: a per-patch KL (a prior row is a whole
    volume's ratios), and methods that read source images (sfda does not cut those into patches)."""
    if method.needs_prior and kl_scope != "batch":
        raise SfdaError(f"the model adapts on random patches of {list(patch)} voxels, and a prior row is a whole "
                        f"volume's class ratios, which a single patch does not hold: give method.kl_scope=batch "
                        f"(the KL pooled over the batch's patches; sfda.data.patches says why)")
    if not method.source_free:
        raise SfdaError(f"method '{method.name}' reads source images, which sfda does not cut into patches; "
                        f"use a source-free method ({said(source_free_methods())})")


@dataclass(frozen=True)
class RandomPatches:
    """A batch transform: each volume of the batch (N, C, *spatial) replaced by one random patch of
    ``size`` (see the module), its labels and valid mask cut alike."""

    size: tuple[int, ...]

    def __call__(self, images: torch.Tensor, labels, mask: torch.Tensor, gen: torch.Generator) -> tuple:
        corners = [self.corner(mask[i], gen) for i in range(images.shape[0])]
        cut = [_window(images[i], c, self.size, 0.0) for i, c in enumerate(corners)]
        held = [_window(mask[i][None], c, self.size, False)[0] for i, c in enumerate(corners)]
        lab = None if labels is None else torch.stack([_window(labels[i][None], c, self.size, 0)[0]
                                                       for i, c in enumerate(corners)])
        return torch.stack(cut), lab, torch.stack(held)

    def corner(self, valid: torch.Tensor, gen: torch.Generator) -> tuple[int, ...]:
        """The patch's first voxel (may be negative: the patch overhangs a short volume)."""
        out = []
        for axis, patch in enumerate(self.size):
            others = tuple(a for a in range(valid.ndim) if a != axis)
            hit = torch.nonzero(valid.any(dim=others) if others else valid).flatten()
            lo, hi = (int(hit[0]), int(hit[-1]) + 1) if len(hit) else (0, valid.shape[axis])
            room = hi - lo - patch
            out.append(lo + int(torch.randint(room + 1, (1,), generator=gen)) if room >= 0 else lo + room // 2)
        return tuple(out)


def _window(x: torch.Tensor, corner: tuple[int, ...], size: tuple[int, ...], fill) -> torch.Tensor:
    """``x`` (C, *spatial) cut at ``corner`` to ``size``; what lies outside ``x`` is ``fill``."""
    out = x.new_full((x.shape[0], *size), fill)
    src, dst = [slice(None)], [slice(None)]
    for c, n, s in zip(corner, size, x.shape[1:]):
        a, b = max(c, 0), min(c + n, s)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - c, a - c + max(b - a, 0)))
    out[tuple(dst)] = x[tuple(src)]
    return out

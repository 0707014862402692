"""nnU-Net's networks, rebuilt from a plans file's ``architecture`` entry: ``net: nnunet.PlainConvUNet``
(or ``nnunet.ResidualEncoderUNet``) with the plans' ``arch_kwargs`` in ``net_args``.

nnU-Net builds them with ``dynamic-network-architectures`` (0.4.4 checked; install it with
``pip install --no-deps dynamic-network-architectures einops``: its declared timm dependency pulls a
torchvision built for another torch). Operation names in the plans (``torch.nn.modules.conv.Conv2d``)
are resolved from a fixed list, never imported by name, so a plans file cannot make sfda import
anything. A checkpoint stores the class name and arguments, so it loads with ``weights_only=True``.

nnU-Net reads images with SimpleITK, whose arrays run (z, y, x): its 2D networks see slices with the
in-plane axes in the opposite order to sfda's (x, y) arrays. ``transpose: true`` swaps them at the
network's input and output, so the weights see what nnU-Net showed them. A 3D network takes
``axes``: sfda's array axis for each of nnU-Net's (``[2, 1, 0]`` without a ``transpose_forward``);
its input is permuted to nnU-Net's order and its logits back.

In eval mode (prediction, validation, the trust check) every input is predicted as nnU-Net's
predictor does it: padded with zeros to at least the plans' ``patch_size``, then overlapping patches
of exactly that size (at most half a patch apart, at nnU-Net's positions), each patch's logits
weighted by a Gaussian (sigma 1/8 of the patch) and the weighted logits averaged. Adaptation (train
mode) sees whole slices, padded with zeros to multiples of the encoder's strides.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from torch import nn

from sfda.data.slices import pad_widths
from sfda.errors import SfdaError

PREFIX = "nnunet."
SUPPORTED = ("PlainConvUNet", "ResidualEncoderUNet")

_OPS = {f"{mod}.{name}": getattr(nn, name) for mod, names in (
    ("torch.nn.modules.conv", ("Conv1d", "Conv2d", "Conv3d")),
    ("torch.nn.modules.instancenorm", ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")),
    ("torch.nn.modules.batchnorm", ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")),
    ("torch.nn.modules.dropout", ("Dropout", "Dropout2d", "Dropout3d")),
    ("torch.nn.modules.activation", ("LeakyReLU", "ReLU", "PReLU", "ELU", "GELU")),
) for name in names}
_OPS.update({f"torch.nn.{k.rsplit('.', 1)[1]}": v for k, v in list(_OPS.items())})
_OP_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def resolve_ops(arch_kwargs: dict) -> dict:
    """The plans' ``arch_kwargs`` with operation names turned into torch classes (fixed list)."""
    out = dict(arch_kwargs)
    for key in _OP_KEYS:
        value = out.get(key)
        if value is None or not isinstance(value, str):
            continue
        if value not in _OPS:
            raise SfdaError(f"nnU-Net architecture: {key} '{value}' is not one sfda rebuilds; supported: "
                            f"{', '.join(sorted(k for k in _OPS if k.startswith('torch.nn.modules')))}")
        out[key] = _OPS[value]
    return out


def _dna_class(name: str):
    try:
        from dynamic_network_architectures.architectures import unet
    except ImportError:
        raise SfdaError(f"net {PREFIX}{name} needs dynamic-network-architectures: pip install --no-deps "
                        "dynamic-network-architectures==0.4.4 einops") from None
    if name not in SUPPORTED:
        raise SfdaError(f"unsupported nnU-Net network {name!r}; choose one of: {', '.join(SUPPORTED)}")
    return getattr(unet, name)


class NnunetNet(nn.Module):
    """An nnU-Net network behind sfda's interface: (N, C, H, W) -> logits (N, K, H, W), full resolution
    only (deep supervision off, as nnU-Net predicts)."""

    def __init__(self, name: str, arch_kwargs: dict, in_channels: int = 1, num_classes: int = 2,
                 transpose: bool = False, patch_size: list[int] | None = None, axes: list[int] | None = None):
        super().__init__()
        cls = _dna_class(name)
        kwargs = {**resolve_ops(arch_kwargs), "input_channels": in_channels, "num_classes": num_classes,
                  "deep_supervision": False}
        try:
            self.net = cls(**kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise SfdaError(f"nnU-Net architecture {name}: the plans' arch_kwargs do not build it ({exc})") from None
        self.transpose = transpose
        self.axes = [int(a) for a in axes] if axes else None
        if self.axes is not None and sorted(self.axes) != list(range(len(self.axes))):
            raise SfdaError(f"nnU-Net network: axes {axes} must order the spatial axes 0..{len(self.axes) - 1}")
        self.num_classes = num_classes
        self.patch = [int(v) for v in patch_size] if patch_size else None
        self.strides = total_strides(arch_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._ordered(x, ())

    def mirrored(self, x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        """The logits averaged over flips along ``axes`` (sfda's sample axes: 0 is the first spatial
        axis), each patch mirrored on its own as nnU-Net does (sfda.nets.mirror.Mirrored calls this);
        train mode: none."""
        return self._ordered(x, () if self.training else tuple(axes))

    def _ordered(self, x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        """The logits of ``x`` in sfda's axis order, the network run in nnU-Net's."""
        if self.transpose:
            return self._logits(x.transpose(-1, -2), tuple(sorted(1 - a for a in axes))).transpose(-1, -2)
        if self.axes is None:
            return self._logits(x, tuple(axes))
        order = [0, 1, *(2 + a for a in self.axes)]
        back = [order.index(i) for i in range(len(order))]
        own = tuple(sorted(self.axes.index(a) for a in axes))  # nnU-Net's axes
        return self._logits(x.permute(order), own).permute(back)

    def _logits(self, x: torch.Tensor, mirror: tuple[int, ...] = ()) -> torch.Tensor:
        from sfda.nets.mirror import mirrored_logits

        net = (lambda t: mirrored_logits(self.net, t, mirror)) if mirror and not self.training else self.net
        if self.training or not self.patch:
            return strided(net, x, self.strides)
        return sliding_window(net, x, self.patch)

    def nnunet_weights(self) -> dict[str, torch.Tensor]:
        """The state dict as nnU-Net names it (without this wrapper's prefix)."""
        return dict(self.net.state_dict())


def total_strides(arch_kwargs: dict) -> list[int]:
    """Per spatial axis, the product of the encoder's strides: input sizes must be multiples of it."""
    strides = arch_kwargs.get("strides", [])
    dims = max((len(s) for s in strides if isinstance(s, (list, tuple))), default=2)
    out = [1] * dims
    for s in strides:
        for i, v in enumerate(s if isinstance(s, (list, tuple)) else [s] * dims):
            out[i] *= int(v)
    return out


def _starts(size: int, patch: int, step: float = 0.5) -> list[int]:
    """nnU-Net's patch positions along one axis (its ``compute_steps_for_sliding_window``): as few
    patches as keep them at most ``step`` patches apart, spread evenly from 0 to size - patch."""
    if size <= patch:
        return [0]
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    return [int(np.round((size - patch) / (n - 1) * i)) for i in range(n)]


def gaussian_weights(patch: list[int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """nnU-Net's importance map (its ``compute_gaussian``): a unit impulse at the patch's centre
    (index size // 2) smoothed by scipy's Gaussian filter (sigma ``sigma_scale`` x the size, truncated
    at 4 sigma), scaled to a peak of 10; entries the filter left at 0 take the smallest other value.
    Computed once per patch size (every batch of a prediction reuses it, as nnU-Net caches it)."""
    return torch.from_numpy(_gaussian(tuple(int(p) for p in patch), sigma_scale).copy())  # the cached one stays


@functools.lru_cache(maxsize=4)
def _gaussian(patch: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(patch)
    impulse[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(impulse, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    g = g / g.max() * 10
    g[g == 0] = g[g > 0].min()
    return g.astype(np.float32)


def pad_centred(x: torch.Tensor, shape: list[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``x`` (N, C, *spatial) padded with zeros, centred as nnU-Net's ``pad_nd_image`` (the odd voxel
    after), to at least ``shape``; and the index that takes the padding off again."""
    widths = pad_widths(tuple(x.shape[2:]), tuple(max(s, t) for s, t in zip(x.shape[2:], shape)))
    pads = [v for b, a in reversed(widths) for v in (b, a)]
    back = tuple(slice(b, b + s) for (b, _), s in zip(widths, x.shape[2:]))
    return (torch.nn.functional.pad(x, pads) if any(pads) else x), (slice(None), slice(None), *back)


def sliding_window(net: nn.Module, x: torch.Tensor, patch: list[int]) -> torch.Tensor:
    """Logits of ``x`` (N, C, *spatial) as nnU-Net's predictor computes them: the input padded with
    zeros (centred) to at least the patch, patches of exactly ``patch`` at nnU-Net's positions, each
    patch's logits weighted by its Gaussian, the weighted sum divided by the summed weights, the
    padding taken off. (nnU-Net sums in float16; here float32.)"""
    padded, back = pad_centred(x, patch)
    size = padded.shape[2:]
    g = gaussian_weights(list(patch)).to(x.device, x.dtype)
    out, norm = None, torch.zeros(size, dtype=x.dtype, device=x.device)
    for corner in itertools.product(*(_starts(s, p) for s, p in zip(size, patch))):
        window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        logits = net(padded[(slice(None), slice(None), *window)])
        if out is None:
            out = x.new_zeros((x.shape[0], logits.shape[1], *size))
        out[(slice(None), slice(None), *window)] += logits * g
        norm[window] += g
    return (out / norm)[back]


def strided(net: nn.Module, x: torch.Tensor, strides: list[int]) -> torch.Tensor:
    """Logits of ``x`` whose sides need not be multiples of the encoder's ``strides``: padded with
    zeros (centred) up to the next multiples, the padding taken off the logits."""
    padded, back = pad_centred(x, [-(-s // k) * k for s, k in zip(x.shape[2:], strides)])
    return net(padded)[back]

"""nnU-Net's networks, rebuilt from a plans file's ``architecture`` entry: ``net: nnunet.PlainConvUNet``
(or ``nnunet.ResidualEncoderUNet``) with the plans' ``arch_kwargs`` in ``net_args``.

nnU-Net builds them with ``dynamic-network-architectures`` (0.4.4 checked; install it with
``pip install --no-deps dynamic-network-architectures einops``: its declared timm dependency pulls a
torchvision built for another torch). Operation names in the plans (``torch.nn.modules.conv.Conv2d``)
are resolved from a fixed list, never imported by name, so a plans file cannot make sfda import
anything. A checkpoint stores the class name and arguments, so it loads with ``weights_only=True``.

nnU-Net reads images with SimpleITK, whose arrays run (z, y, x): its 2D networks see slices with the
in-plane axes in the opposite order to sfda's (x, y) arrays. ``transpose: true`` swaps them at the
network's input and output, so the weights see what nnU-Net showed them.

In eval mode (prediction, validation, the trust check) a slice larger than the plans' ``patch_size``
is predicted as nnU-Net predicts it: overlapping patches (half a patch apart), each patch's logits
weighted by a Gaussian (sigma 1/8 of the patch) and the weighted logits averaged. Adaptation (train
mode) sees whole slices.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

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
                 transpose: bool = False, patch_size: list[int] | None = None):
        super().__init__()
        cls = _dna_class(name)
        kwargs = {**resolve_ops(arch_kwargs), "input_channels": in_channels, "num_classes": num_classes,
                  "deep_supervision": False}
        try:
            self.net = cls(**kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise SfdaError(f"nnU-Net architecture {name}: the plans' arch_kwargs do not build it ({exc})") from None
        self.transpose = transpose
        self.num_classes = num_classes
        self.patch = [int(v) for v in patch_size] if patch_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            return self._logits(x.transpose(-1, -2)).transpose(-1, -2)
        return self._logits(x)

    def mirrored(self, x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        """The logits averaged over flips along ``axes`` (sfda's slice axes: 0 is H, 1 is W), each patch
        mirrored on its own as nnU-Net does (sfda.nets.mirror.Mirrored calls this); train mode: none."""
        if self.training or not axes:
            return self(x)
        own = tuple(1 - a for a in axes) if self.transpose else tuple(axes)  # nnU-Net's (rows, cols)
        if self.transpose:
            return self._logits(x.transpose(-1, -2), own).transpose(-1, -2)
        return self._logits(x, own)

    def _logits(self, x: torch.Tensor, mirror: tuple[int, ...] = ()) -> torch.Tensor:
        from sfda.nets.mirror import mirrored_logits

        net = (lambda t: mirrored_logits(self.net, t, mirror)) if mirror and not self.training else self.net
        if self.training or not self.patch or all(s <= p for s, p in zip(x.shape[2:], self.patch)):
            return net(x)
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
    """nnU-Net's patch positions along one axis: evenly spaced from 0 to size - patch, at most
    ``step`` patches apart."""
    if size <= patch:
        return [0]
    n = int(math.ceil((size - patch) / (patch * step))) + 1
    return sorted({int(round(v)) for v in np.linspace(0, size - patch, n)})


def gaussian_weights(patch: list[int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """nnU-Net's importance map: a Gaussian centred on the patch, sigma ``sigma_scale`` x its size,
    peak 10, no zero entry."""
    axes = []
    for p in patch:
        d = np.arange(p) - p // 2
        axes.append(np.exp(-0.5 * (d / max(p * sigma_scale, 1e-6)) ** 2))
    g = axes[0][:, None] * axes[1][None, :]
    g = g / g.max() * 10
    g[g == 0] = g[g > 0].min()
    return torch.from_numpy(g.astype(np.float32))


def sliding_window(net: nn.Module, x: torch.Tensor, patch: list[int]) -> torch.Tensor:
    """Logits of ``x`` (N, C, H, W) from overlapping patches, Gaussian-weighted and averaged; a slice
    smaller than the patch along an axis is taken whole along it."""
    size = x.shape[2:]
    tile = [min(p, s) for p, s in zip(patch, size)]
    g = gaussian_weights(tile).to(x.device, x.dtype)
    out, norm = None, torch.zeros(size, dtype=x.dtype, device=x.device)
    for i in _starts(size[0], tile[0]):
        for j in _starts(size[1], tile[1]):
            logits = net(x[:, :, i:i + tile[0], j:j + tile[1]])
            if out is None:
                out = x.new_zeros((x.shape[0], logits.shape[1], *size))
            out[:, :, i:i + tile[0], j:j + tile[1]] += logits * g
            norm[i:i + tile[0], j:j + tile[1]] += g
    return out / norm

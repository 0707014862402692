"""ENet (Paszke et al. 2016), the segmentation network used by Bateson et al. 2020.

A small, fast encoder/decoder: most computation happens at 1/8 resolution and the
decoder re-uses the encoder's max-pool indices, which is why it has only ~0.36 M
parameters and runs acceptably on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sfda.errors import SfdaError, require

#: ENet down-samples three times (initial block, stage 1, stage 2).
DOWNSAMPLING = 8


def _conv_bn_prelu(
    in_ch: int,
    out_ch: int,
    kernel: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    stride: int = 1,
) -> nn.Sequential:
    """Conv (no bias, BN follows) + BatchNorm + PReLU: ENet's basic unit."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.PReLU(),
    )


class InitialBlock(nn.Module):
    """Halve resolution cheaply: a strided conv concatenated with a max-pool of the input.

    The original uses 13 conv filters + 3 pooled RGB channels = 16.  With
    ``in_channels >= 16`` the pooled branch would already exceed 16 channels, so
    only the conv branch is used.
    """

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        self.use_pool = in_channels < out_channels
        conv_out = out_channels - in_channels if self.use_pool else out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if self.use_pool:
            out = torch.cat([out, F.max_pool2d(x, 2, 2)], dim=1)
        return self.act(self.bn(out))


class RegularBottleneck(nn.Module):
    """Residual bottleneck with a regular, dilated or asymmetric (k x 1, 1 x k) middle conv."""

    def __init__(
        self,
        channels: int,
        dropout: float,
        dilation: int = 1,
        asymmetric: int = 0,
    ) -> None:
        super().__init__()
        mid = channels // 4
        self.reduce = _conv_bn_prelu(channels, mid, 1)
        self.middle = self._middle(mid, dilation, asymmetric)
        self.expand = nn.Sequential(nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.dropout = nn.Dropout2d(dropout)
        self.act = nn.PReLU()

    @staticmethod
    def _middle(mid: int, dilation: int, asymmetric: int) -> nn.Module:
        """Build the spatial conv; asymmetric splits a k x k conv into k x 1 then 1 x k."""
        if asymmetric:
            pad = asymmetric // 2
            return nn.Sequential(
                _conv_bn_prelu(mid, mid, (asymmetric, 1), padding=(pad, 0)),
                _conv_bn_prelu(mid, mid, (1, asymmetric), padding=(0, pad)),
            )
        return _conv_bn_prelu(mid, mid, 3, padding=dilation, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        ext = self.dropout(self.expand(self.middle(self.reduce(x))))
        return self.act(x + ext)


class DownsamplingBottleneck(nn.Module):
    """Halve resolution and widen; the main branch's max-pool indices feed the decoder."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        mid = in_channels // 4
        self.out_channels = out_channels
        self.reduce = _conv_bn_prelu(in_channels, mid, 2, stride=2)
        self.middle = _conv_bn_prelu(mid, mid, 3, padding=1)
        self.expand = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.dropout = nn.Dropout2d(dropout)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        main, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        main = F.pad(main, (0, 0, 0, 0, 0, self.out_channels - main.shape[1]))
        ext = self.dropout(self.expand(self.middle(self.reduce(x))))
        return self.act(main + ext), indices


def max_unpool(x: Tensor, indices: Tensor, size) -> Tensor:
    """``F.max_unpool2d`` as one scatter: the same values and gradients, without the size check that
    imports sympy on its first call (~0.5 s of every ``sfda predict``)."""
    n, c = x.shape[:2]
    flat = x.new_zeros(n, c, size[0] * size[1]).scatter(2, indices.flatten(2), x.flatten(2))
    return flat.view(n, c, size[0], size[1])


class UpsamplingBottleneck(nn.Module):
    """Double resolution: max-unpool on the main branch, transposed conv on the other."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        mid = in_channels // 4
        self.main_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.reduce = _conv_bn_prelu(in_channels, mid, 1)
        self.up = nn.ConvTranspose2d(mid, mid, 2, stride=2, bias=False)
        self.up_bn = nn.BatchNorm2d(mid)
        self.up_act = nn.PReLU()
        self.expand = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.dropout = nn.Dropout2d(dropout)
        self.act = nn.PReLU()

    def forward(self, x: Tensor, indices: Tensor, size: torch.Size) -> Tensor:
        main = max_unpool(self.main_conv(x), indices, size[-2:])
        ext = self.up_act(self.up_bn(self.up(self.reduce(x), output_size=size[-2:])))
        ext = self.dropout(self.expand(ext))
        return self.act(main + ext)


def _stage_2_or_3(dropout: float) -> list[nn.Module]:
    """The eight non-downsampling bottlenecks shared by stages 2 and 3."""
    return [
        RegularBottleneck(128, dropout),
        RegularBottleneck(128, dropout, dilation=2),
        RegularBottleneck(128, dropout, asymmetric=5),
        RegularBottleneck(128, dropout, dilation=4),
        RegularBottleneck(128, dropout),
        RegularBottleneck(128, dropout, dilation=8),
        RegularBottleneck(128, dropout, asymmetric=5),
        RegularBottleneck(128, dropout, dilation=16),
    ]


class ENet(nn.Module):
    """ENet: (N, C, H, W) images -> (N, K, H, W) logits, for H and W divisible by 8."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        require(in_channels >= 1, f"enet: in_channels must be >= 1, got {in_channels}")
        require(num_classes >= 1, f"enet: num_classes must be >= 1, got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*[RegularBottleneck(64, 0.01) for _ in range(4)])
        self.down2 = DownsamplingBottleneck(64, 128, dropout=0.1)
        self.stage2 = nn.Sequential(*_stage_2_or_3(0.1))
        self.stage3 = nn.Sequential(*_stage_2_or_3(0.1))
        self.up4 = UpsamplingBottleneck(128, 64, dropout=0.1)
        self.stage4 = nn.Sequential(*[RegularBottleneck(64, 0.1) for _ in range(2)])
        self.up5 = UpsamplingBottleneck(64, 16, dropout=0.1)
        self.stage5 = RegularBottleneck(16, 0.1)
        self.final = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, output_padding=1)

    def _check_input(self, x: Tensor) -> None:
        """Fail with a readable message instead of a shape error deep in the decoder."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SfdaError(
                f"enet expects input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % DOWNSAMPLING or w % DOWNSAMPLING:
            raise SfdaError(f"enet needs H and W divisible by {DOWNSAMPLING}, got {h}x{w}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x0 = self.initial(x)
        x1, idx1 = self.down1(x0)
        x1 = self.stage1(x1)
        x2, idx2 = self.down2(x1)
        x3 = self.stage3(self.stage2(x2))
        x4 = self.stage4(self.up4(x3, idx2, x1.shape))
        x5 = self.stage5(self.up5(x4, idx1, x0.shape))
        return self.final(x5, output_size=x.shape[-2:])

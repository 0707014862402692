"""A small ResNeXt-style CNN that predicts class-size ratios from an image.

Bateson et al. estimate the anatomical prior (the expected size of each class)
with an auxiliary regression network; its output is a distribution over classes,
hence the final softmax.
"""

from __future__ import annotations

from torch import Tensor, nn

from sfda.errors import SfdaError, require

#: Smallest spatial size accepted; below this the stride-2 stages collapse to nothing.
MIN_SIZE = 16


class ResNeXtBlock(nn.Module):
    """1x1 reduce, 3x3 grouped conv, 1x1 expand, each with BatchNorm; residual add."""

    def __init__(self, in_ch: int, out_ch: int, cardinality: int, stride: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut = self._shortcut(in_ch, out_ch, stride)
        self.act = nn.ReLU(inplace=True)

    @staticmethod
    def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
        """Identity when shapes match, else a strided 1x1 projection."""
        if in_ch == out_ch and stride == 1:
            return nn.Identity()
        return nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class Regressor(nn.Module):
    """(N, C, H, W) images -> (N, K) non-negative class ratios summing to one.

    Stage ``i`` has ``width * 2**i`` channels and starts with a stride-2 block;
    ``blocks`` bottleneck blocks per stage.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 32,
        depth: int = 3,
        cardinality: int = 8,
        blocks: int = 2,
    ) -> None:
        super().__init__()
        self._validate(in_channels, num_classes, width, depth, cardinality, blocks)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_ch = width
        for stage in range(depth):
            out_ch = width * 2**stage
            for b in range(blocks):
                layers.append(ResNeXtBlock(in_ch, out_ch, cardinality, stride=2 if b == 0 else 1))
                in_ch = out_ch
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, num_classes)

    @staticmethod
    def _validate(
        in_channels: int, num_classes: int, width: int, depth: int, cardinality: int, blocks: int
    ) -> None:
        """Reject settings that would fail later with an obscure conv error."""
        require(in_channels >= 1, f"regressor: in_channels must be >= 1, got {in_channels}")
        require(num_classes >= 1, f"regressor: num_classes must be >= 1, got {num_classes}")
        require(depth >= 1, f"regressor: depth must be >= 1, got {depth}")
        require(blocks >= 1, f"regressor: blocks must be >= 1, got {blocks}")
        require(cardinality >= 1, f"regressor: cardinality must be >= 1, got {cardinality}")
        require(
            width >= 2 and (width // 2) % cardinality == 0,
            f"regressor: width/2 must be a multiple of cardinality; got width={width}, "
            f"cardinality={cardinality}",
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SfdaError(
                f"regressor expects input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < MIN_SIZE:
            raise SfdaError(f"regressor needs H, W >= {MIN_SIZE}, got {x.shape[-2]}x{x.shape[-1]}")
        features = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.head(features).softmax(dim=1)

"""MONAI networks by name: ``net: monai.UNet`` (or ``monai.BasicUNet``, ``monai.DynUNet``,
``monai.SegResNet``, ``monai.AttentionUnet``) with their own arguments in ``net_args``.

sfda's convention (``in_channels``, ``num_classes``) maps onto MONAI's (``in_channels``,
``out_channels``, ``spatial_dims``: 2, or 3 with ``slicing.dims: 3``, set by train-source).
Arguments MONAI requires get defaults that suit sfda's slices (four levels, stride 2), and
batch normalisation unless ``norm`` says otherwise, so AdaBN and TENT have batch-norm layers to
adapt (MONAI's own default, instance norm without affine parameters, leaves them nothing). A
checkpoint stores the name and the arguments, so it loads with ``weights_only=True`` like any
other: no code is pickled.
MONAI is optional: ``pip install monai`` (1.6.1 checked).
"""

from __future__ import annotations

import inspect

from torch import nn

from sfda.errors import SfdaError

PREFIX = "monai."
SUPPORTED = ("UNet", "BasicUNet", "DynUNet", "SegResNet", "AttentionUnet")

_DEFAULTS = {
    "UNet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "norm": "batch"},
    "AttentionUnet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2)},
    "BasicUNet": {"norm": "batch"},
    "SegResNet": {"norm": "batch"},
    "DynUNet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "upsample_kernel_size": [2, 2, 2],
                "norm_name": "batch"},
}


class MonaiNet(nn.Module):
    """A MONAI network behind sfda's interface: (N, C, *spatial) -> logits (N, K, *spatial), 2D or 3D."""

    def __init__(self, name: str, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2, **kwargs):
        super().__init__()
        try:
            import monai.networks.nets as mn
        except ImportError:
            raise SfdaError(f"net {PREFIX}{name} needs MONAI: pip install monai (1.6.1 is checked)") from None
        if name not in SUPPORTED:
            raise SfdaError(f"unsupported MONAI network {PREFIX}{name}; choose one of: "
                            + ", ".join(PREFIX + n for n in SUPPORTED))
        if spatial_dims not in (2, 3):
            raise SfdaError(f"net {PREFIX}{name}: spatial_dims {spatial_dims} is not supported; 2 (slices) or 3 "
                            "(volumes, with slicing.dims 3)")
        cls = getattr(mn, name)
        args = {**_DEFAULTS.get(name, {}), **kwargs, "spatial_dims": spatial_dims, "in_channels": in_channels,
                "out_channels": num_classes}
        try:
            inspect.signature(cls).bind(**args)
            self.net = cls(**args)
        except (TypeError, ValueError, AssertionError) as exc:
            accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
            raise SfdaError(f"bad arguments for network {PREFIX}{name} ({exc}); accepted arguments: "
                            f"{', '.join(accepted)}") from None
        self.num_classes = num_classes

    def forward(self, x):
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out

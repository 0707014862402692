"""Network registry: configs name a network by string, ``build_net`` makes it.

A plain dict keeps the set of choices explicit and lets errors list them.
"""

from __future__ import annotations

import inspect

from torch import nn

from sfda.errors import SfdaError
from sfda.nets.enet import ENet
from sfda.nets.regressor import Regressor
from sfda.nets.unet import UNet

NETS: dict[str, type[nn.Module]] = {"enet": ENet, "unet": UNet, "regressor": Regressor}

#: What each network outputs: per-pixel logits, or per-image class ratios.
NET_KIND: dict[str, str] = {"enet": "segmentation", "unet": "segmentation", "regressor": "regression"}

__all__ = ["ENet", "NETS", "NET_KIND", "Regressor", "UNet", "build_net", "net_kind", "net_names"]


def net_names() -> list[str]:
    """sfda's own network names, sorted (MONAI's are named ``monai.<Name>``: sfda.nets.monai_nets;
    nnU-Net's ``nnunet.<Name>``: sfda.nets.nnunet_nets)."""
    return sorted(NETS)


def net_kind(name: str) -> str:
    """What the network ``name`` outputs: "segmentation" or "regression"."""
    from sfda.nets.ensemble import NAME as ENSEMBLE
    from sfda.nets.merge import NAME as MERGE
    from sfda.nets.monai_nets import PREFIX
    from sfda.nets.nnunet_nets import PREFIX as NNUNET

    return "segmentation" if name.startswith((PREFIX, NNUNET)) or name in (MERGE, ENSEMBLE) else NET_KIND[name]


def _accepted_args(cls: type[nn.Module]) -> list[str]:
    """Constructor argument names of ``cls``, for error messages."""
    return [name for name in inspect.signature(cls).parameters if name != "self"]


def build_net(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the network ``name`` with ``kwargs``; user mistakes become SfdaError."""
    from sfda.nets.ensemble import NAME as ENSEMBLE, FoldEnsemble
    from sfda.nets.merge import NAME as MERGE, StructureMerge
    from sfda.nets.monai_nets import PREFIX, SUPPORTED, MonaiNet
    from sfda.nets.nnunet_nets import PREFIX as NNUNET, NnunetNet

    if name == MERGE:  # written by the trust check (on_distrust: structure), never named in a config
        if set(kwargs) != {"adapted", "source", "classes"}:
            raise SfdaError(f"network {MERGE!r} is written by the trust fall-back (an adapted and a source model "
                            f"joined), not trained; choose one of: {', '.join(net_names())}")
        adapted, source = kwargs["adapted"], kwargs["source"]  # each rebuilt from its net and net_args
        return StructureMerge(build_net(adapted["net"], **adapted.get("net_args", {})),
                              build_net(source["net"], **source.get("net_args", {})), kwargs["classes"])
    if name == ENSEMBLE:  # written by the import of several nnU-Net folds, never named in a config
        if not set(kwargs) <= {"members", "rule"} or "members" not in kwargs:
            raise SfdaError(f"network {ENSEMBLE!r} is written by `sfda import-nnunet --fold 0,1,...` (several "
                            f"networks averaged), not trained; choose one of: {', '.join(net_names())}")
        members = [build_net(m["net"], **m.get("net_args", {})) for m in kwargs["members"]]
        return FoldEnsemble(members, kwargs.get("rule", "logits"))
    if name.startswith(PREFIX):
        return MonaiNet(name[len(PREFIX):], **kwargs)
    if name.startswith(NNUNET):
        return NnunetNet(name[len(NNUNET):], **kwargs)
    if name not in NETS:
        raise SfdaError(f"unknown network {name!r}; choose one of: {', '.join(net_names())}, "
                        f"or a MONAI network: {', '.join(PREFIX + n for n in SUPPORTED)}")
    cls = NETS[name]
    try:
        inspect.signature(cls).bind(**kwargs)  # unknown or duplicate names
        return cls(**kwargs)  # values of the wrong type
    except TypeError as exc:
        raise SfdaError(
            f"bad arguments for network {name!r} ({exc}); "
            f"accepted arguments: {', '.join(_accepted_args(cls))}"
        ) from None

"""``sfda import-nnunet``: an nnU-Net v2 result folder as an sfda source checkpoint; and the way back,
an adapted model as an nnU-Net result folder.

The checkpoint repeats nnU-Net's preprocessing for the folder's configuration in sfda's terms
(``slicing.preprocess: nnunet``, sfda.data.nnunet_prep): the crop to the non-zero region, its
resampling to the configuration's spacing (2D: in the plane only, slices along the axis nnU-Net
slices, its ``transpose_forward``), and its normalisation (``CTNormalization``: clip to the training
set's foreground percentiles, then its foreground mean and std; ``ZScoreNormalization``: each
volume's own mean and std, over the crop). Slices or volumes larger
than the patch are predicted from Gaussian-weighted patches as nnU-Net does (sfda.nets.nnunet_nets),
and mirrored along the checkpoint's ``inference_allowed_mirroring_axes`` (kept as ``mirror_axes`` in
sfda's slice axes; sfda.nets.mirror). Several folds make one model, ``net: ensemble``, averaging their
logits as nnU-Net's predictor does (sfda.nets.ensemble).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from sfda.config import NnunetImportConfig, config_to_dict
from sfda.config.card import ModelCard, Network, NnunetOrigin, Normalization, Slicing, Training
from sfda.engine.checkpoint import save_checkpoint
from sfda.errors import SfdaError
from sfda.io.cases import CHANNEL_SEP
from sfda.io.nnunet_results import NnunetModel, fold_names, read_result_folder, write_result_folder
from sfda.nets import build_net
from sfda.nets.ensemble import NAME as ENSEMBLE, FoldEnsemble, ensemble_args
from sfda.nets.nnunet_nets import PREFIX, SUPPORTED
from sfda.stages.common import require, write_config
from sfda.stages.outputs import claim_file


_READERS = ("SimpleITKIO", "NibabelIO")  # read the file's own voxel order, as sfda does


def _configuration(model: NnunetModel) -> dict:
    configs, name, chain = model.plans["configurations"], model.configuration, []
    cfg: dict = {}
    while name:  # nnU-Net's configurations may inherit another's entries, recursively
        if name in chain or name not in configs:
            raise SfdaError(f"{model.folder / 'plans.json'}: configuration '{chain[-1] if chain else name}' inherits "
                            f"from '{name}', which is {'a cycle' if name in chain else 'missing'}")
        chain.append(name)
        cfg = {**configs[name], **cfg}
        name = configs[name].get("inherits_from")
    if len(cfg.get("patch_size", [])) not in (2, 3):
        raise SfdaError(f"{model.folder}: configuration '{model.configuration}' has patch size "
                        f"{cfg.get('patch_size')}; sfda reads 2D and 3D configurations")
    if cfg.get("previous_stage"):
        raise SfdaError(f"{model.folder}: configuration '{model.configuration}' is a cascade stage (it takes "
                        f"'{cfg['previous_stage']}''s segmentation as input), which sfda does not run; give the "
                        "3d_fullres or 3d_lowres folder")
    reader = str(model.plans.get("image_reader_writer", "SimpleITKIO"))
    if reader not in _READERS:
        raise SfdaError(f"{model.folder / 'plans.json'}: images were read with {reader}; sfda reads files in their "
                        f"own voxel order like {' / '.join(_READERS)} and does not repeat its reorientation")
    return cfg


def _architecture(model: NnunetModel, cfg: dict) -> tuple[str, dict]:
    arch = cfg.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch:
        raise SfdaError(f"{model.folder / 'plans.json'} has no 'architecture' entry (plans from nnU-Net < 2.4); "
                        "re-plan the dataset with nnU-Net >= 2.4")
    name = str(arch["network_class_name"]).rsplit(".", 1)[-1]
    if name not in SUPPORTED:
        raise SfdaError(f"{model.folder}: network {arch['network_class_name']} is not one sfda rebuilds "
                        f"({', '.join(SUPPORTED)})")
    return name, dict(arch.get("arch_kwargs", {}))


def _labels_and_channels(model: NnunetModel) -> tuple[list[str], list[str]]:
    """The label names in value order and the channel names in input order."""
    path = model.folder / "dataset.json"
    labels = model.dataset.get("labels", {})
    if not isinstance(labels, dict) or "ignore" in labels:
        raise SfdaError(f"{path}: labels must map names to values (a model trained with an ignore label "
                        "is not supported)")
    if any(not isinstance(v, int) for v in labels.values()) or sorted(labels.values()) != list(range(len(labels))):
        raise SfdaError(f"{path}: labels must be the values 0..K-1, one per name "
                        "(region-based labels are not supported)")
    return sorted(labels, key=labels.get), list(model.channels)


def _normalizations(model: NnunetModel, cfg: dict, channels: int) -> list[Normalization]:
    """The configuration's normalisation of each input channel."""
    schemes = cfg.get("normalization_schemes", ["ZScoreNormalization"] * channels)
    masked = cfg.get("use_mask_for_norm", [False] * channels)
    if len(schemes) != channels or len(masked) != channels:
        raise SfdaError(f"{model.folder / 'plans.json'}: normalization_schemes / use_mask_for_norm name "
                        f"{len(schemes)} / {len(masked)} channels, dataset.json {channels}; re-plan the dataset")
    return [_normalization(model, scheme, bool(mask), c) for c, (scheme, mask) in enumerate(zip(schemes, masked))]


def _normalization(model: NnunetModel, scheme: str, masked: bool, channel: int) -> Normalization:
    if masked:
        raise SfdaError(f"{model.folder}: this configuration normalises channel {channel} inside the non-zero "
                        "mask (use_mask_for_norm), which sfda does not repeat")
    if scheme == "ZScoreNormalization":
        return Normalization.percentile(0.0, 100.0)
    if scheme == "CTNormalization":
        props = model.plans["foreground_intensity_properties_per_channel"][str(channel)]
        return Normalization.fixed_values([props["percentile_00_5"], props["percentile_99_5"], props["mean"],
                                           props["std"]])
    raise SfdaError(f"{model.folder}: normalisation {scheme} of channel {channel} is not supported "
                    "(ZScoreNormalization, CTNormalization)")


def _slicing(model: NnunetModel, cfg: dict) -> tuple[Slicing, dict, list[int]]:
    """nnU-Net's axes are SimpleITK's (z, y, x) after ``transpose_forward``; sfda's arrays are (x, y, z).
    Returns the slicing, the network's axis arguments (2D: ``transpose``, nnU-Net's slice is
    (rows, cols); 3D: ``axes``, sfda's axis for each of nnU-Net's) and the mirroring axes in sfda's
    sample axes (nnU-Net's are its own)."""
    tf = [int(a) for a in model.plans.get("transpose_forward", [0, 1, 2])]
    ours = [2 - a for a in tf]  # sfda's array axis for each of nnU-Net's axes
    allowed = [int(a) for a in model.checkpoint.get("inference_allowed_mirroring_axes") or ()]
    spacing = [float(v) for v in cfg["spacing"]]
    if len(cfg["patch_size"]) == 3:
        if any(a not in (0, 1, 2) for a in allowed):
            raise ValueError(f"inference_allowed_mirroring_axes {tuple(allowed)} are not a volume's axes")
        in_ours = tuple(spacing[ours.index(i)] for i in range(3))
        # pad_multiple 1: the network pads as nnU-Net's predictor does (sfda.nets.nnunet_nets)
        slicing = Slicing(dims=3, pad_multiple=1, spacing=in_ours, preprocess="nnunet")
        return slicing, {"axes": ours}, sorted(ours[a] for a in allowed)
    axis, rows, cols = ours
    transpose = rows > cols  # nnU-Net's slice is (rows, cols); sfda's slice keeps the array's axis order
    spacing = spacing[-2:]
    # pad_multiple 1: slices reach the network at their own size; it pads them as nnU-Net's predictor
    # does (sfda.nets.nnunet_nets), so its patches sit where nnU-Net's sit
    slicing = Slicing(axis=axis, pad_multiple=1, spacing=tuple(spacing[::-1] if transpose else spacing),
                      preprocess="nnunet")
    if any(a not in (0, 1) for a in allowed):
        raise ValueError(f"inference_allowed_mirroring_axes {tuple(allowed)} are not a 2D slice's axes")
    mirror = sorted(sorted((rows, cols)).index((rows, cols)[a]) for a in allowed)
    return slicing, {"transpose": transpose}, mirror


def nnunet_card(model: NnunetModel) -> ModelCard:
    """The sfda model card of a result folder's fold."""
    try:
        return _card(model)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise SfdaError(f"{model.folder / 'plans.json'} lacks or mangles an entry nnU-Net writes "
                        f"({type(exc).__name__}: {exc}); re-plan the dataset or give another folder") from None


def _card(model: NnunetModel) -> ModelCard:
    cfg = _configuration(model)
    name, arch_kwargs = _architecture(model, cfg)
    labels, channels = _labels_and_channels(model)
    slicing, axes, mirror = _slicing(model, cfg)
    norms = _normalizations(model, cfg, len(channels))
    slicing = replace(slicing, norm=norms[0], norms=tuple(norms) if len(norms) > 1 else ())
    net_args = {"arch_kwargs": arch_kwargs, "in_channels": len(channels), "num_classes": len(labels), **axes,
                "patch_size": [int(v) for v in cfg["patch_size"]]}
    origin = NnunetOrigin(folder=str(model.folder.resolve()), fold=model.fold, configuration=model.configuration,
                          checkpoint=str(model.checkpoint_path.resolve()),
                          trainer=str(model.checkpoint.get("trainer_name", "")),
                          mirror_axes=tuple(int(a) for a in model.checkpoint.get("inference_allowed_mirroring_axes")
                                            or ()))
    return ModelCard(network=Network(PREFIX + name, net_args), kind="segmentation", labels=tuple(labels),
                     modality=CHANNEL_SEP.join(channels), slicing=slicing, training=Training(stage="source"),
                     mirror_axes=tuple(mirror),
                     nnunet=origin)


def _fold_net(model: NnunetModel):
    """One fold's network with its weights, and its model card."""
    card = nnunet_card(model)
    net = build_net(card.network.name, **card.network.args)
    try:
        net.net.load_state_dict(model.checkpoint["network_weights"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise SfdaError(f"{model.checkpoint_path}: the weights do not fit the plans' architecture "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return net, card


def _ensemble(members: list[tuple], folds: list[str]):
    """Several folds' networks as one :class:`FoldEnsemble`, described by the first fold's card."""
    cards = [c for _, c in members]
    first = cards[0]
    origin = replace(first.nnunet, fold=",".join(folds), folds=tuple(folds),
                     checkpoints=tuple(c.nnunet.checkpoint for c in cards))
    mirror = first.mirror_axes if all(c.mirror_axes == first.mirror_axes for c in cards) else ()
    card = replace(first, network=Network(ENSEMBLE, ensemble_args(cards)), nnunet=origin, mirror_axes=mirror)
    return FoldEnsemble([n for n, _ in members]), card


def import_nnunet(cfg: NnunetImportConfig) -> Path:
    """Write ``cfg.out``: the folder's fold (or folds, as one ensemble) as an sfda source checkpoint
    (weights unchanged)."""
    imported(cfg)
    return Path(cfg.out)


def imported(cfg: NnunetImportConfig) -> tuple[torch.nn.Module, ModelCard]:
    """What :func:`import_nnunet` writes, handed back as well: the network (in eval mode) and its card,
    for a stage that imports its own source model (``--nnunet``) to go on with, not read back."""
    require(cfg.folder, "--folder (an nnU-Net result folder)")
    require(cfg.out, "--out")
    claim_file(cfg.out, [cfg.folder], overwrite=cfg.overwrite)
    folds = fold_names(cfg.folder, cfg.fold)
    # one fold's checkpoint (weights and optimiser state) in memory at a time; its network is what stays
    members = [_fold_net(read_result_folder(cfg.folder, f, cfg.checkpoint_name)) for f in folds]
    net, card = members[0] if len(members) == 1 else _ensemble(members, folds)
    card = replace(card, training=replace(card.training, config=config_to_dict(cfg)))
    save_checkpoint(cfg.out, net, card)
    write_config(cfg, Path(cfg.out).parent / f"{Path(cfg.out).stem}.config.yaml")
    return net.eval(), card


def export_nnunet(card: ModelCard, net, out: str | Path) -> Path | None:
    """If ``card`` came from an nnU-Net folder, write ``net`` as an nnU-Net result folder under ``out``
    (plans and dataset copied, the fold's checkpoint with the adapted weights); else nothing."""
    info = card.nnunet
    if not info:
        return None
    original = read_result_folder(info.folder, info.fold, Path(info.checkpoint).name)
    return write_result_folder(original, net.nnunet_weights(), Path(out) / "nnunet")

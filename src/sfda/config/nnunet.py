"""Where a stage's source model comes from when it is an nnU-Net v2 result folder (sfda.stages.nnunet),
declared once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NnunetFold:
    """Which checkpoint of an nnU-Net v2 result folder (sfda.stages.nnunet)."""

    # the nnU-Net fold to read; several (0,1,2,3,4, or all: every fold_N folder) make one model that
    # averages the folds' logits as nnU-Net's predictor does (sfda.nets.ensemble; predict and evaluate)
    fold: str = "0"
    checkpoint_name: str = "checkpoint_final.pth"  # the fold's checkpoint file


@dataclass
class NnunetSource(NnunetFold):
    """A source model from an nnU-Net v2 result folder instead of ``checkpoint``: it is imported
    to ``<out>/source.pt`` first."""

    nnunet: str = ""  # an nnU-Net v2 result folder (TRAINER__PLANS__CONFIG) as the source model


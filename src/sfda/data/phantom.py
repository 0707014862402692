"""A synthetic lumbar-spine dataset with a built-in domain shift, for demos and tests.

Real data cannot ship with the project, so ``make_phantom`` writes a small
``ivdm3seg``-layout dataset in about a second: per subject a water image
(``wat``: discs bright on darker bone, the "source" domain) and an in-phase image
(``inn``: bright marrow and fat, discs barely brighter than their surroundings,
noisier: the "target" domain), plus the disc mask (label 1).

Geometry (mm, array order = file order):

* axis 0 runs across sagittal slices (left -> right, 2.0 mm), so 2D slices
  along axis 0 are sagittal images;
* axis 1 runs along the spine (inferior -> superior, 1.25 mm);
* axis 2 runs posterior -> anterior (1.25 mm): skin and subcutaneous fat at
  low indices, then muscle, spinal canal, vertebral bodies and discs, and
  anterior soft tissue with a vessel.

All tissue intensities live in :data:`CONTRAST` so the shift can be tuned in
one place.  Everything is drawn from ``numpy.random.Generator``s seeded from
``seed`` (subject k's draws do not depend on ``n_subjects``), and the .nii.gz
files are gzipped with mtime 0: the same seed gives byte-identical files.

The anatomy itself is drawn in :mod:`sfda.data.phantom_shapes`; this module
sets the contrasts, renders each modality and writes the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# The anatomy names are re-exported so ``sfda.data.phantom`` keeps every name it
# had before the drawing code moved to its own module.
from sfda.data.phantom_shapes import (  # noqa: F401
    EDGE_MM,
    SPACING,
    _Anatomy,
    _anatomy,
    _bias_basis,
    _canal_geometry,
    _column,
    _Column,
    _grid,
    _levels,
    _local,
    _posterior_elements,
    _skin_and_fat,
    _soft,
    _spine,
    _vessel,
)
from sfda.errors import SfdaError
from sfda.io.cases import CaseList
from sfda.io.layouts import index_dataset
from sfda.io.volume import write_volume

#: Mean tissue intensities (fraction of SCALE) and image properties, per modality.
#: ``nucleus``: extra relative brightness of the disc core; ``noise``: Rician sigma
#: (fraction of SCALE); ``bias``: strength of the multiplicative bias field;
#: ``texture``: amplitude of the smooth tissue heterogeneity.
CONTRAST: dict[str, dict[str, float]] = {
    "wat": {
        "background": 0.02,
        "muscle": 0.30,
        "fat": 0.10,
        "vessel": 0.55,
        "csf": 0.90,
        "bone": 0.22,
        "disc": 0.80,
        "nucleus": 0.15,
        "noise": 0.03,
        "bias": 0.25,
        "texture": 0.06,
    },
    "inn": {
        "background": 0.02,
        "muscle": 0.40,
        "fat": 0.62,
        "vessel": 0.35,
        "csf": 0.35,
        "bone": 0.46,
        "disc": 0.76,
        "nucleus": 0.0,
        "noise": 0.05,
        "bias": 0.30,
        "texture": 0.08,
    },
}
SCALE = 400.0  # scanner-like units (the real crops range 0..~500)
TISSUE_JITTER = 0.06  # per-subject relative spread of each tissue intensity
DISC_LABEL = 1


def make_phantom(
    out_dir: str | os.PathLike,
    n_subjects: int = 8,
    seed: int = 0,
    shape: tuple[int, int, int] = (16, 64, 48),
) -> CaseList:
    """Write subjects P01, P02, ... as ``<S>/<S>_{wat,inn}.nii.gz`` + ``<S>/<S>-Labels.nii.gz``.

    Returns the indexed dataset (layout ``ivdm3seg``).
    """
    shape = _check_args(n_subjects, shape)
    out = Path(out_dir)
    width = max(2, len(str(n_subjects)))
    affine = phantom_affine(shape)
    for k, child in enumerate(np.random.SeedSequence(seed).spawn(n_subjects)):
        subject = f"P{k + 1:0{width}d}"
        _write_subject(out / subject, subject, np.random.default_rng(child), shape, affine)
    return index_dataset(out, "ivdm3seg")


def _check_args(n_subjects: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if int(n_subjects) < 1:
        raise SfdaError(
            f"phantom: n_subjects must be at least 1, got {n_subjects}; pass --subjects 1 or more"
        )
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise SfdaError(
            f"phantom: shape must be 3 sizes of at least 4 voxels, got {shape}; e.g. --shape 16 64 "
            "48"
        )
    return shape  # type: ignore[return-value]


def phantom_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """Axis 0 -> +R (2 mm), axis 1 -> +S (1.25 mm), axis 2 -> +A (1.25 mm), centred on 0."""
    affine = np.zeros((4, 4))
    affine[0, 0], affine[2, 1], affine[1, 2], affine[3, 3] = SPACING[0], SPACING[1], SPACING[2], 1.0
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def _write_subject(
    folder: Path,
    subject: str,
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    affine: np.ndarray,
) -> None:
    anatomy = _anatomy(rng, shape)
    for modality in CONTRAST:
        image = _render(anatomy, CONTRAST[modality], rng)
        write_volume(folder / f"{subject}_{modality}.nii.gz", image.astype(np.float32), affine)
    label = (anatomy.disc >= 0.5).astype(np.uint8) * DISC_LABEL
    write_volume(folder / f"{subject}-Labels.nii.gz", label, affine, dtype=np.uint8)


# --------------------------------------------------------------------------- rendering


def _render(an: _Anatomy, contrast: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Paint tissues in order (later ones cover earlier), then bias field and Rician noise."""
    val = {
        k: contrast[k] * max(0.2, 1.0 + TISSUE_JITTER * rng.standard_normal())
        for k in ("background", "muscle", "fat", "vessel", "csf", "bone", "disc")
    }
    tex = 1.0 + contrast["texture"] * an.texture
    img = val["background"] * (1 - an.body) + val["muscle"] * tex * an.body
    for tissue, membership, textured in (
        ("fat", an.fat, True),
        ("vessel", an.vessel, False),
        ("csf", an.csf, False),
        ("bone", an.bone, True),
    ):
        level = val[tissue] * (tex if textured else 1.0)
        img = img * (1 - membership) + level * membership
    disc_level = val["disc"] * (1.0 + contrast["nucleus"] * an.nucleus)
    img = img * (1 - an.disc) + disc_level * an.disc
    bias = np.exp(contrast["bias"] / 3.0 * np.tensordot(an.bias_coef, an.bias_terms, axes=1))
    img = img * bias * SCALE * rng.uniform(0.85, 1.15)
    sigma = contrast["noise"] * SCALE
    noisy_re = img + sigma * rng.standard_normal(img.shape)
    noisy_im = sigma * rng.standard_normal(img.shape)
    return np.sqrt(noisy_re**2 + noisy_im**2)

"""The phantom's anatomy: soft tissue memberships on the voxel grid, drawn from a subject's rng.

The draws happen in a fixed order, so a seed gives the same anatomy; the
axis conventions are those of :mod:`sfda.data.phantom`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import expit

SPACING = (2.0, 1.25, 1.25)
EDGE_MM = 0.5  # width of the partial-volume edge of every structure


@dataclass
class _Anatomy:
    """Soft memberships in [0, 1] of each structure, shared by all modalities of a subject."""

    body: np.ndarray
    fat: np.ndarray
    vessel: np.ndarray
    csf: np.ndarray
    bone: np.ndarray
    disc: np.ndarray
    nucleus: np.ndarray
    texture: np.ndarray
    bias_terms: np.ndarray  # (n_terms, *shape) polynomial basis of the bias field
    bias_coef: np.ndarray


# --------------------------------------------------------------------------- geometry


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in mm, broadcastable: x (L-R), s (I-S), a (P-A)."""
    x, s, a = ((np.arange(n) + 0.5) * sp for n, sp in zip(shape, SPACING))
    return x[:, None, None], s[None, :, None], a[None, None, :]


def _soft(r: np.ndarray, size_mm: float) -> np.ndarray:
    """Membership from a normalised radius (1 on the surface) with a ~EDGE_MM edge."""
    return expit((1.0 - r) * size_mm / EDGE_MM)


@dataclass
class _Column:
    """The spine's centre line a_c(s), x_c(s) and the extent of each body and disc."""

    lengths: tuple[float, float, float]
    a0: float
    amp: float
    freq: float
    phase: float
    curve: float
    x0: float
    x_tilt: float

    def a_c(self, s):
        L1 = self.lengths[1]
        t = (s - L1 / 2) / (L1 / 2)
        return (
            self.a0
            + self.amp * np.sin(2 * np.pi * self.freq * s / L1 + self.phase)
            + self.curve * t**2
        )

    def slope(self, s: float) -> float:
        L1 = self.lengths[1]
        t = (s - L1 / 2) / (L1 / 2)
        return self.amp * np.cos(
            2 * np.pi * self.freq * s / L1 + self.phase
        ) * 2 * np.pi * self.freq / L1 + self.curve * 2 * t / (L1 / 2)

    def x_c(self, s):
        L1 = self.lengths[1]
        return self.x0 + self.x_tilt * (s - L1 / 2) / (L1 / 2)


def _column(rng: np.random.Generator, lengths: tuple[float, float, float]) -> _Column:
    L0, L1, L2 = lengths
    return _Column(
        lengths=lengths,
        a0=L2 * rng.uniform(0.60, 0.68),
        amp=rng.uniform(1.0, 4.0),
        freq=rng.uniform(0.3, 0.8),
        phase=rng.uniform(0, 2 * np.pi),
        curve=rng.uniform(-6.0, 6.0),
        x0=L0 / 2 + rng.uniform(-1.0, 1.0) * SPACING[0],
        x_tilt=rng.uniform(-1.5, 1.5),
    )


def _levels(rng: np.random.Generator, L1: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres and heights along s of alternating body, disc, body, ... (4-6 bodies)."""
    n_vert = int(rng.integers(4, 7))
    disc_frac = rng.uniform(0.28, 0.38)
    kinds = np.arange(2 * n_vert - 1) % 2  # 0 = body, 1 = disc
    heights = np.where(kinds == 1, disc_frac, 1 - disc_frac) * rng.uniform(0.85, 1.15, kinds.size)
    span = L1 * rng.uniform(0.9, 1.15)
    heights *= span / heights.sum()
    start = L1 * rng.uniform(-0.12, 0.02)
    centres = start + np.cumsum(heights) - heights / 2
    return centres, heights


def _local(x, s, a, col: _Column, s_i: float):
    """Coordinates (u along the column, v anterior, w lateral) of a level tilted with the curve."""
    theta = np.arctan(col.slope(s_i))
    ds, da = s - s_i, a - col.a_c(s_i)
    u = ds * np.cos(theta) + da * np.sin(theta)
    v = -ds * np.sin(theta) + da * np.cos(theta)
    return u, v, x - col.x_c(s_i)


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> _Anatomy:
    x, s, a = _grid(shape)
    lengths = tuple(n * sp for n, sp in zip(shape, SPACING))
    col = _column(rng, lengths)
    centres, heights = _levels(rng, lengths[1])
    half_depth = lengths[2] * rng.uniform(0.17, 0.21)  # vertebral body, A-P
    half_width = lengths[0] * rng.uniform(0.38, 0.5)  # vertebral body, L-R
    bone, disc, nucleus = _spine(rng, x, s, a, col, centres, heights, half_depth, half_width)
    canal_a, canal_r = _canal_geometry(rng, col, s, half_depth)
    csf = _soft(
        np.sqrt(((a - canal_a) / canal_r) ** 2 + ((x - col.x_c(s)) / (1.3 * canal_r)) ** 2), canal_r
    )
    bone = np.maximum(
        bone, _posterior_elements(rng, x, s, a, col, centres, heights, canal_a - canal_r)
    )
    body, fat = _skin_and_fat(rng, s, a, lengths)
    vessel = _vessel(rng, x, s, a, col, half_depth)
    texture = gaussian_filter(rng.standard_normal(shape), sigma=(1.0, 2.5, 2.5))
    texture /= texture.std() + 1e-12
    terms, coef = _bias_basis(shape), rng.standard_normal(9)
    return _Anatomy(body, fat, vessel, csf, bone, disc, nucleus, texture, terms, coef)


def _spine(rng, x, s, a, col, centres, heights, half_depth, half_width):
    """Rounded-box vertebral bodies and lens-shaped discs between them."""
    shape = np.broadcast_shapes(x.shape, s.shape, a.shape)
    bone, disc, nucleus = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, (s_i, h) in enumerate(zip(centres, heights)):
        size = 1.0 + rng.normal(0.0, 0.05)
        hv, hw = half_depth * size, half_width * size
        u, v, w = _local(x, s, a, col, s_i)
        if i % 2 == 0:
            r = (np.abs(u / (h / 2)) ** 4 + np.abs(v / hv) ** 4 + np.abs(w / hw) ** 4) ** 0.25
            bone = np.maximum(bone, _soft(r, min(h / 2, hv)))
        else:
            hv_d, hw_d = 0.95 * hv, 0.9 * hw
            radial = np.sqrt((v / hv_d) ** 2 + (w / hw_d) ** 2)
            r = (np.abs(u / (h / 2)) ** 3 + radial**3) ** (1 / 3)
            disc = np.maximum(disc, _soft(r, h / 2))
            nucleus = np.maximum(nucleus, np.clip(1.0 - r / 0.6, 0.0, 1.0))
    return bone, disc, nucleus


def _canal_geometry(rng, col: _Column, s, half_depth: float):
    """Centre (a, per s) and radius of the spinal canal just behind the bodies."""
    radius = rng.uniform(3.0, 4.5)
    gap = rng.uniform(1.0, 2.5)
    return col.a_c(s) - half_depth - gap - radius, radius


def _posterior_elements(rng, x, s, a, col, centres, heights, canal_back):
    """Small bony blocks (laminae/spinous processes) behind the canal at each body."""
    out = np.zeros(np.broadcast_shapes(x.shape, s.shape, a.shape))
    depth, width = rng.uniform(3.0, 5.0), rng.uniform(4.0, 7.0)
    for s_i, h in zip(centres[::2], heights[::2]):
        hu = 0.35 * h
        a_mid = canal_back - 1.0 - depth
        r = (
            np.abs((s - s_i) / hu) ** 4
            + np.abs((a - a_mid) / depth) ** 4
            + np.abs((x - col.x_c(s_i)) / width) ** 4
        ) ** 0.25
        out = np.maximum(out, _soft(r, min(hu, depth)))
    return out


def _skin_and_fat(rng, s, a, lengths):
    """Air behind the back (dark), then a subcutaneous fat layer of varying thickness."""
    L1, L2 = lengths[1], lengths[2]
    phase = rng.uniform(0, 2 * np.pi)
    skin = L2 * rng.uniform(0.02, 0.07) + 1.5 * np.sin(2 * np.pi * s / L1 + phase)
    thickness = rng.uniform(3.0, 6.0) + 1.0 * np.cos(2 * np.pi * s / L1 + phase)
    body = expit((a - skin) / EDGE_MM)
    fat = body * expit((skin + thickness - a) / EDGE_MM)
    return body, fat


def _vessel(rng, x, s, a, col: _Column, half_depth: float):
    """A vessel (aorta / vena cava) running along the front of the spine."""
    radius = rng.uniform(3.0, 5.0)
    a_v = col.a_c(s) + half_depth + rng.uniform(2.0, 4.0) + radius
    x_v = col.x_c(s) + rng.uniform(-4.0, 4.0)
    return _soft(np.sqrt(((a - a_v) / radius) ** 2 + ((x - x_v) / (1.2 * radius)) ** 2), radius)


def _bias_basis(shape: tuple[int, int, int]) -> np.ndarray:
    """Polynomial terms up to degree 2 (no constant) over [-1, 1]^3."""
    c = [
        np.linspace(-1, 1, n).reshape([-1 if d == i else 1 for d in range(3)])
        for i, n in enumerate(shape)
    ]
    terms = [
        c[0],
        c[1],
        c[2],
        c[0] * c[1],
        c[0] * c[2],
        c[1] * c[2],
        c[0] ** 2,
        c[1] ** 2,
        c[2] ** 2,
    ]
    return np.stack([np.broadcast_to(t, shape) for t in terms])

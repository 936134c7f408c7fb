"""Synthetic training patches: the drawn and built content that photo folders rarely hold.

Urban scenes (long straight edges, repeated windows, grids) and drawn art (thin strokes, flat
fills, hatching, screentone) are where a model trained on photos loses most (issue 28: Urban100
and Manga109).  A synthetic sample is one HR patch drawn here, and its LR made from it with the
same MATLAB-compatible bicubic as every other sample, so it teaches the true degradation of such
content.

Every shape is drawn from its signed distance ``d`` (in HR pixels, negative inside): a pixel's
coverage is ``clip(0.5 - d / soft, 0, 1)``, an anti-aliased edge as a rasteriser draws it for
``soft = 1`` and a slightly soft one (a lens, a scan) for larger ``soft``.  Four kinds:

* ``fills``: flat background with convex polygons of other flat levels (flat colour, hard edges);
* ``strokes``: lines a few pixels wide or less, single or hatched in parallel (ink lines);
* ``stripes``: periodic bars, one direction or a grid, often axis-aligned (facades, windows);
* ``dots``: a rotated lattice of dots (screentone, halftone).

A patch is a pure function of its generator, so the batch of a step stays a pure function of the
step (``training/data.py``).
"""
from __future__ import annotations

import numpy as np

from rclut_numba.bicubic import downscale


def _coverage(d: np.ndarray, soft: float) -> np.ndarray:
    return np.clip(0.5 - d / soft, 0.0, 1.0)


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _angle(rng: np.random.Generator) -> float:
    """Half the time near an axis (built content), else any direction."""
    if rng.random() < 0.5:
        return rng.integers(0, 4) * np.pi / 2 + rng.normal(0.0, 0.02)
    return rng.uniform(0.0, np.pi)


def _level_apart(rng: np.random.Generator, a: float, gap: float = 40.0) -> float:
    """A grey level at least ``gap`` from ``a`` (a visible edge), uniform over those."""
    below, above = max(0.0, a - gap), max(0.0, 255.0 - gap - a)
    u = rng.uniform(0.0, below + above)
    return u if u < below else a + gap + (u - below)


def _two_levels(rng: np.random.Generator) -> tuple[float, float]:
    """Background and ink grey levels."""
    a = rng.uniform(0, 255)
    return a, _level_apart(rng, a)


def _fills(rng, y, x, size, soft):
    bg = rng.uniform(0, 255)
    img = np.full(y.shape, bg)
    for _ in range(rng.integers(1, 5)):
        level = _level_apart(rng, bg)
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(0.15, 0.8) * size
        d = np.full(y.shape, -np.inf)
        start = rng.uniform(0, 2 * np.pi)
        sides = rng.integers(3, 7)
        for k in range(sides):  # a convex polygon: the max of its sides' half-plane distances
            n = _unit(start + 2 * np.pi * k / sides + rng.normal(0.0, 0.2))
            d = np.maximum(d, (x - cx) * n[0] + (y - cy) * n[1] - radius)
        cov = _coverage(d, soft)
        img = img * (1 - cov) + level * cov
    return img


def _strokes(rng, y, x, size, soft):
    bg, ink = _two_levels(rng)
    img = np.full(y.shape, bg)
    for _ in range(rng.integers(1, 4)):
        n = _unit(_angle(rng) + np.pi / 2)  # the stroke's normal
        width = rng.uniform(0.7, 4.0)
        px, py = rng.uniform(0, size, 2)  # the stroke (the hatching's middle one) passes here
        count, spacing = (1, 0.0) if rng.random() < 0.5 else (int(rng.integers(2, 12)),
                                                              rng.uniform(width + 1.5, 14.0))
        t = (x - px) * n[0] + (y - py) * n[1]
        if count > 1:  # hatching: the distance to the nearest of `count` parallel strokes
            first = -(count // 2)
            k = np.clip(np.round(t / spacing), first, first + count - 1)
            t = t - k * spacing
        d = np.abs(t) - width / 2
        cov = _coverage(d, soft)
        img = img * (1 - cov) + ink * cov
    return img


def _stripes(rng, y, x, size, soft):
    bg, ink = _two_levels(rng)
    angle = _angle(rng)
    period = rng.uniform(3.0, size / 3)
    duty = rng.uniform(0.2, 0.7)

    def bars(n):  # distance to the nearest bar of width duty * period, period along n
        t = np.mod(x * n[0] + y * n[1] + rng.uniform(0, period), period)
        return np.abs(t - period / 2) - duty * period / 2

    d = bars(_unit(angle))
    if rng.random() < 0.5:  # a grid: windows in a facade
        d = np.maximum(d, bars(_unit(angle + np.pi / 2)))
    cov = _coverage(d, soft)
    return bg * (1 - cov) + ink * cov


def _dots(rng, y, x, size, soft):
    bg, ink = _two_levels(rng)
    pitch = rng.uniform(3.0, 12.0)
    radius = rng.uniform(0.15, 0.45) * pitch
    u = _unit(rng.uniform(0, np.pi / 2))
    v = np.array([-u[1], u[0]])
    a = (x * u[0] + y * u[1]) / pitch
    b = (x * v[0] + y * v[1]) / pitch
    d = np.hypot(a - np.round(a), b - np.round(b)) * pitch - radius
    cov = _coverage(d, soft)
    return bg * (1 - cov) + ink * cov


DRAW = {"fills": _fills, "strokes": _strokes, "stripes": _stripes, "dots": _dots}
KINDS = tuple(DRAW)


def draw_patch(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """One ``size x size`` uint8 HR patch of ``kind`` (a random one when None)."""
    kind = kind if kind is not None else KINDS[rng.integers(0, len(KINDS))]
    if kind not in DRAW:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {', '.join(KINDS)}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    soft = 1.0 if rng.random() < 0.6 else rng.uniform(1.0, 3.0)
    img = DRAW[kind](rng, y, x, size, soft)
    if rng.random() < 0.3:  # a little sensor or scan noise
        img = img + rng.normal(0.0, rng.uniform(0.5, 3.0), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def synthetic_pair(rng: np.random.Generator, crop: int,
                   scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR ``crop x crop``, HR ``scale*crop`` square) uint8: a drawn patch and its bicubic LR."""
    hr = draw_patch(rng, scale * crop)
    return downscale(hr, scale), hr

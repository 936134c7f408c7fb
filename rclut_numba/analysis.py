"""Receptive fields of LUT models: what the spec allows, and what a model actually uses.

Grid convention (shared by every function here): a field is a ``(2m+1, 2m+1)`` array with
``m = spec.margin``; entry ``[m + dy, m + dx]`` is about the LR pixel at offset ``(dy, dx)``
from an anchor pixel, and says whether (or how much) that pixel changes the anchor's
``scale x scale`` output block.  The anchor is the centre entry.

* :func:`theoretical_receptive_field` derives the field from the spec alone: per branch the
  union over the orientations of (RC window + pattern offsets), turned back to the image frame;
  the union over a stage's branches; the Minkowski sum over the cascaded stages.
* :func:`empirical_receptive_field` perturbs single LR pixels and watches the engine's output.
* :func:`receptive_field_table` summarises sizes and table storage for a list of specs.
* :func:`flat_field_deviation` says how far a model moves a flat grey image, level by level.

numpy only (the engine runs on numba); gradient-based fields of the torch networks are computed
in ``training``/notebooks and placed on the same grid with :func:`crop_field`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .bundle import bundle_size_kb
from .engine import LutModel, rotate_offset
from .rc_storage import CODE_MAX, MAX_SHIFT
from .spec import PATTERN_OFFSETS, Branch, ModelSpec, array_key

__all__ = [
    "FieldRow",
    "bounding_box",
    "branch_footprint",
    "crop_field",
    "empirical_receptive_field",
    "field_pixels",
    "flat_field_deviation",
    "format_flat_field",
    "format_table",
    "minkowski_sum",
    "random_model",
    "receptive_field_table",
    "stage_footprint",
    "theoretical_receptive_field",
]



# ---- theory ------------------------------------------------------------------------------
def branch_footprint(branch: Branch, orientations=range(4)) -> frozenset:
    """LR offsets (image frame) one branch reads for an anchor, over the given orientations
    (0..3 the rotations, 4..7 those of the transpose).

    In the frame of ``rot90(x, r)`` the branch reads RC indices at the pattern offsets, and the
    index at pattern offset ``o`` sums the RC window ``o + w`` (w in the centred N x N square);
    both are offsets in the rotated frame, so each is rotated back with :func:`rotate_offset`.
    """
    c = branch.rc // 2
    window = [(i, j) for i in range(-c, c + 1) for j in range(-c, c + 1)]  # rc 0 or 1: {(0, 0)}
    out = set()
    for r in orientations:
        for py, px in PATTERN_OFFSETS[branch.pattern]:
            for wy, wx in window:
                out.add(rotate_offset(py + wy, px + wx, r))
    return frozenset(out)


def stage_footprint(stage, orientations: int = 4) -> frozenset:
    """Union of the stage's branch footprints: every branch's sum lands on the same anchor."""
    out = set()
    for br in stage.branches:
        out |= branch_footprint(br, range(orientations))
    return frozenset(out)


def minkowski_sum(a, b) -> frozenset:
    """``{p + q}``: stage 2 reads stage-1 outputs at ``b``, each of which saw ``a`` around it."""
    return frozenset((ay + by, ax + bx) for ay, ax in a for by, bx in b)


def theoretical_receptive_field(spec: ModelSpec) -> tuple[np.ndarray, int]:
    """``(grid, m)``: bool ``(2m+1, 2m+1)`` grid of the offsets that can influence an anchor."""
    field = frozenset({(0, 0)})
    for stage in spec.stages:
        field = minkowski_sum(field, stage_footprint(stage, spec.orientations))
    m = spec.margin
    grid = np.zeros((2 * m + 1, 2 * m + 1), bool)
    for dy, dx in field:
        # margin is documented as covering the field; a spec where it does not is a bug there
        if max(abs(dy), abs(dx)) > m:
            raise AssertionError(f"{spec.describe()}: offset {(dy, dx)} lies outside margin {m}")
        grid[m + dy, m + dx] = True
    return grid, m


# ---- measurement -------------------------------------------------------------------------
def empirical_receptive_field(model, size: int | None = None, trials: int = 4, seed: int = 0,
                              image: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``(grid, m)``: mean absolute change of an anchor's output block per perturbed offset.

    Each trial perturbs a lattice of LR pixels ("sites") of one image to other random values and
    runs the model on both images.  Sites are ``2m+1`` apart and at least ``2m+1`` from the
    border, so each anchor sees at most one changed site and no site reaches an anchor through
    edge replication.  If site ``c`` changes anchor ``p``'s block, offset ``c - p`` is in ``p``'s
    field: ``grid[m + c - p]`` accumulates the block's mean ``|change|`` (in pixel values),
    averaged over all site samples; ``grid > 0`` is the measured field.

    model:  a :class:`LutModel` (anything with ``spec`` and ``upscale_plane(plane, tile)``).
    size:   side of the random test images (default: room for 8 x 8 sites); ignored if
            ``image`` is given.
    trials: images (random ones, or perturbation draws on ``image``), each run twice.
    image:  optional uint8 HxW (or HxWx3: its first channel) textured base instead of noise;
            the site lattice then moves between trials so different pixels are perturbed.
    """
    spec = model.spec
    m, s = spec.margin, spec.scale
    step = 2 * m + 1
    rng = np.random.default_rng(seed)
    if image is not None:
        base_image = np.asarray(image)
        if base_image.ndim == 3:
            base_image = base_image[..., 0]
        if base_image.dtype != np.uint8 or base_image.ndim != 2:
            raise ValueError(f"image must be uint8 HxW or HxWxC, got {base_image.dtype} "
                             f"{np.asarray(image).shape}")
        h, w = base_image.shape
    else:
        side = 9 * step + 1 if size is None else int(size)
        h = w = side
    if min(h, w) < 2 * step + 1:
        raise ValueError(f"test image {h}x{w} is too small for margin {m}: need at least "
                         f"{2 * step + 1} pixels per side")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    total = np.zeros((step, step), np.float64)
    n_samples = 0
    for t in range(trials):
        base = (rng.integers(0, 256, (h, w), dtype=np.uint8) if image is None
                else np.ascontiguousarray(base_image))
        shift = rng.integers(0, step, 2) if image is not None and t else np.zeros(2, int)
        ys = np.arange(step + shift[0], h - step, step)
        xs = np.arange(step + shift[1], w - step, step)
        if len(ys) == 0 or len(xs) == 0:  # a shift pushed the lattice out: use the unshifted one
            ys, xs = np.arange(step, h - step, step), np.arange(step, w - step, step)
        pert = base.copy()
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        # any other value, uniformly: both small and large steps are sampled
        delta = rng.integers(1, 256, yy.shape)
        pert[yy, xx] = ((base[yy, xx].astype(np.int64) + delta) % 256).astype(np.uint8)
        out0 = model.upscale_plane(base, tile=None).astype(np.int16)
        out1 = model.upscale_plane(pert, tile=None).astype(np.int16)
        change = np.abs(out1 - out0).reshape(h, s, w, s).mean(axis=(1, 3))  # per anchor
        near = np.zeros((h, w), bool)
        for cy in ys:
            for cx in xs:
                win = change[cy - m:cy + m + 1, cx - m:cx + m + 1]
                # win[i, j] is anchor p = c + (i - m, j - m); its offset c - p is (m - i, m - j)
                total += win[::-1, ::-1]
                near[cy - m:cy + m + 1, cx - m:cx + m + 1] = True
                n_samples += 1
        if change[~near].any():
            raise AssertionError(f"{spec.describe()}: output changed more than margin {m} "
                                 "LR pixels away from every perturbed pixel")
    return total / n_samples, m


def crop_field(sensitivity: np.ndarray, centre: tuple[int, int], m: int) -> np.ndarray:
    """The ``(2m+1, 2m+1)`` grid of a per-input-pixel map around ``centre`` (no flip).

    For a gradient map ``d(anchor block)/d(input)``, input pixel ``centre + d`` is at offset ``d``
    from the anchor, which is already the grid convention.
    """
    cy, cx = centre
    a = np.asarray(sensitivity)
    if cy - m < 0 or cx - m < 0 or cy + m >= a.shape[0] or cx + m >= a.shape[1]:
        raise ValueError(f"a field of margin {m} around {centre} does not fit in {a.shape}")
    return a[cy - m:cy + m + 1, cx - m:cx + m + 1].copy()


# ---- sizes -------------------------------------------------------------------------------
def field_pixels(grid: np.ndarray) -> int:
    """Number of offsets in the field (non-zero entries)."""
    return int(np.count_nonzero(grid))


def bounding_box(grid: np.ndarray) -> tuple[int, int]:
    """``(rows, cols)`` of the smallest box holding the field; ``(0, 0)`` when empty."""
    g = np.asarray(grid) != 0
    rows, cols = np.flatnonzero(g.any(axis=1)), np.flatnonzero(g.any(axis=0))
    if rows.size == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


class FieldRow(NamedTuple):
    name: str
    pixels: int
    bbox: tuple[int, int]
    table_kb: float


def receptive_field_table(specs) -> list[FieldRow]:
    """One row per spec: name, theoretical field pixels, its bounding box, table storage KB."""
    rows = []
    for spec in specs:
        grid, _ = theoretical_receptive_field(spec)
        rows.append(FieldRow(spec.name, field_pixels(grid), bounding_box(grid),
                             bundle_size_kb(spec)))
    return rows


def format_table(rows, extra: dict | None = None) -> str:
    """Markdown table of :class:`FieldRow` rows; ``extra`` adds columns {title: [value per row]}."""
    extra = extra or {}
    head = ["model", "RF pixels", "bounding box", "tables (KB)", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        cells = [r.name, str(r.pixels), f"{r.bbox[0]} x {r.bbox[1]}", f"{r.table_kb:,.1f}",
                 *(str(v[i]) for v in extra.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- flat field ----------------------------------------------------------------------------
def flat_field_deviation(model: LutModel) -> np.ndarray:
    """``d[v]`` = max |output - v| over the output of an image that is grey level v everywhere
    (v = 0..255): how far the model shifts flat areas, which a viewer sees as banding.

    Edge replication makes a 1x1 image as flat as any larger one, and the engine treats channels
    independently, so one call on a 1x1 image of 256 channels (one per level) gives all of it.
    """
    levels = np.arange(256)
    out = model.upscale_channels(levels.astype(np.uint8).reshape(1, 1, 256), tile=None)
    return np.abs(out.astype(np.int16) - levels).max(axis=(0, 1))


def format_flat_field(deviation: np.ndarray) -> str:
    """One line: the largest shift and how many levels move by more than one."""
    worst = int(deviation.max())
    over = int((deviation > 1).sum())
    at = ", ".join(str(v) for v in np.flatnonzero(deviation == worst)[:4])
    return (f"flat grey moves by at most {worst} level{'s' if worst != 1 else ''} "
            f"(at {at}{' ...' if (deviation == worst).sum() > 4 else ''}); "
            f"{over} of 256 levels by more than 1")


# ---- models without trained tables ---------------------------------------------------------
def random_model(spec: ModelSpec, seed: int = 0) -> LutModel:
    """A :class:`LutModel` with random tables, built so that every table read matters.

    For exploring what a layout *can* see when no trained bundle exists.  Tables drawn naively
    over their full ranges can hide parts of the field: RC sums of many pixels concentrate, so
    thresholds spread over the reachable range leave the RC index nearly constant, and a last
    stage whose sum is mostly negative is clipped to 0.  So: intermediate-stage entries are
    uniform in -128..127 (their mean lands mid-range after the +127 bias); last-stage entries
    are uniform in 0..63, so the output (at most 4 x 63 per branch, whatever the orientations)
    is never clipped; RC thresholds are quantiles of the window sums of uniform random pixels,
    so the RC index spreads over 0..255.
    """
    rng = np.random.default_rng(seed)
    last = len(spec.stages) - 1
    arrays = {}
    for si, bi, br in spec.branches():
        key = array_key(si, bi)
        lo, hi = (0, 64) if si == last else (-128, 128)
        arrays[f"{key}_lut"] = rng.integers(lo, hi, (spec.lut_rows(br), spec.n_outputs(si)),
                                            dtype=np.int8)
        if br.rc:
            n2 = br.rc * br.rc
            # packable like a transferred table (rc_storage): a full-range int16 centre row, the
            # others int8 codes times 2**8, so that every row spans about the int16 range
            table = (rng.integers(-CODE_MAX, CODE_MAX + 1, (n2, 256)) << MAX_SHIFT).astype(np.int16)
            table[n2 // 2] = rng.integers(-32768, 32768, 256)
            pixels = rng.integers(0, 256, (4096, n2))
            sums = table[np.arange(n2), pixels].astype(np.int64).sum(axis=1)
            thresholds = np.quantile(sums, np.arange(1, 256) / 256.0)
            arrays[f"{key}_rc_table"] = table
            arrays[f"{key}_rc_thresholds"] = np.sort(np.round(thresholds)).astype(np.int32)
    return LutModel(spec, arrays, source=f"<random tables, seed {seed}>")

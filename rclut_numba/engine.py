"""The deployed engine: validates and converts, then hands planes to the numba kernels.

``LutModel.upscale`` takes and returns uint8 arrays (HxW, HxWx3, HxWx4).  Colour channels run
independently, as the papers do; alpha is upscaled with bicubic; ``luma_only`` runs the LUTs on
Y only and bicubic on chroma.  Large images run in overlapping tiles whose overlap covers the
model's receptive field, so the output equals the untiled one exactly while memory stays bounded.
All channels of an image go through each kernel launch together; two-stage models (MuLUT,
RC-LUT) run as a single launch per image (and tile), luma-only's colour conversion included.
SR-LUT's published LUTs run by default in SR-LUT's own arithmetic (``arithmetic="srlut"``,
``kernels/srlut_float.py``); every model can run in the project's integer arithmetic.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np

from .bundle import BundleError, load_bundle, validate_arrays
from .importers import SRLUT_SOURCE
from .kernels.lut_stage import (
    division_type,
    lut_stage_block,
    lut_stage_single,
    lut_two_stages,
    upscale_chroma_to_rgb,
)
from .kernels.planes import pad_planes
from .kernels.rc_window import combined_tables, level_table, rc_stage_maps
from .kernels.srlut_float import srlut_upscale
from .kernels.threads import run_tasks
from .spec import PATTERN_OFFSETS, ModelSpec, array_key

PATTERN_PAD = 2  # the largest pattern offset (D, Y); maps are padded this much on every side
DEFAULT_TILE = 512  # LR pixels per tile side: ~4 MB of index maps per channel, no overhead at 720p


# ---- optional per-section timing (benchmarks/bench_engine.py) -----------------------------
_profile: dict[str, float] | None = None


@contextmanager
def profile():
    """Collect seconds per engine section while the block runs: yields a dict filled with
    ``rc`` (RC windows), ``stage1``, ``stage2``, ... (LUT stages), ``copies`` (padding, channel
    split and stacking, tiles) and ``colour`` (luma-only conversion and chroma bicubic)."""
    global _profile
    before, _profile = _profile, {}
    try:
        yield _profile
    finally:
        _profile = before


def _lap(name: str, t0: float) -> float:
    """Charge the time since ``t0`` to ``name`` when profiling; returns now."""
    t = time.perf_counter()
    if _profile is not None:
        _profile[name] = _profile.get(name, 0.0) + t - t0
    return t


# ---- geometry of the orientation ensemble --------------------------------------------------
# Orientation o < 4 is ``numpy.rot90(image, o)``; o >= 4 is ``numpy.rot90(image.T, o - 4)``.
def rotate_offset(dy: int, dx: int, r: int) -> tuple[int, int]:
    """Offset (dy, dx) in the frame of orientation ``r`` (0..7) expressed in the image's frame."""
    for _ in range(r % 4):
        dy, dx = dx, -dy
    return (dx, dy) if r >= 4 else (dy, dx)


def block_permutation(scale: int, orientations: int = 4) -> np.ndarray:
    """perm[o, k]: where output-block entry k (row-major, frame of orientation o) lands in the
    image frame."""
    perm = np.empty((orientations, scale * scale), np.int64)
    for o in range(orientations):
        for ky in range(scale):
            for kx in range(scale):
                a, b = ky, kx
                for _ in range(o % 4):
                    a, b = b, scale - 1 - a
                perm[o, ky * scale + kx] = b * scale + a if o >= 4 else a * scale + b
    return perm


def window_offsets(n: int, orientations: int = 4) -> np.ndarray:
    """(O, n*n, 2) RC window offsets per orientation; row p = n*i + j is at (i - n//2, j - n//2)."""
    c = n // 2
    out = np.empty((orientations, n * n, 2), np.int64)
    for o in range(orientations):
        for i in range(n):
            for j in range(n):
                out[o, n * i + j] = rotate_offset(i - c, j - c, o)
    return out


class _StagePlan:
    """Everything a stage kernel needs that does not depend on the image.

    Map 0 of the stage's input maps is its input; RC branch j (widest window first) under
    orientation r writes map ``1 + O j + r`` (O orientations).  All maps are edge-padded by
    ``pad``.
    """

    def __init__(self, spec: ModelSpec, si: int, arrays: dict[str, np.ndarray]):
        stage = spec.stages[si]
        nb = len(stage.branches)
        self.last = si == len(spec.stages) - 1
        self.out_scale = spec.scale if self.last else 1
        self.divisor, self.bias = spec.stage_rescale(si)
        self.residual = spec.adds_input(si)
        rc_branches = sorted((bi for bi, br in enumerate(stage.branches) if br.rc),
                             key=lambda bi: -stage.branches[bi].rc)
        rc_slot = {bi: j for j, bi in enumerate(rc_branches)}
        n_or = spec.orientations
        self.n_maps = 1 + n_or * len(rc_branches)
        self.half = max([0] + [stage.branches[bi].rc // 2 for bi in rc_branches])
        self.reach = max(max(abs(v) for off in PATTERN_OFFSETS[br.pattern] for v in off)
                         for br in stage.branches)  # rows a pattern reads above or below
        self.pad = max(PATTERN_PAD, self.half)
        self.reads = np.zeros((nb, n_or, 4, 3), np.int64)  # (map, dy, dx): branch, orient., input
        self.n_inputs = np.zeros(nb, np.int64)
        self.row_start = np.zeros(nb, np.int64)
        luts = []
        row = 0
        for bi, br in enumerate(stage.branches):
            pattern = PATTERN_OFFSETS[br.pattern]
            self.n_inputs[bi] = len(pattern)
            for r in range(n_or):
                m = 1 + n_or * rc_slot[bi] + r if br.rc else 0
                for t in range(4):
                    dy, dx = rotate_offset(*pattern[min(t, len(pattern) - 1)], r)
                    self.reads[bi, r, t] = (m, dy, dx)
            self.row_start[bi] = row
            lut = arrays[f"{array_key(si, bi)}_lut"]
            luts.append(lut)
            row += lut.shape[0]
        lut = np.concatenate(luts, axis=0)
        if self.last:
            # one copy of the tables per orientation, columns placed where they land in the block
            k = self.out_scale ** 2
            perm = block_permutation(self.out_scale, n_or)
            self.tables = np.zeros((n_or, lut.shape[0], -(-k // 16) * 16), np.int8)
            for r in range(n_or):
                self.tables[r][:, perm[r]] = lut
        else:
            self.tables = np.ascontiguousarray(lut[:, 0])
        self.rc = None
        self.rc_args = (np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros(0, np.int16), np.zeros(0, np.uint8), np.zeros(0, np.int64),
                        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        if rc_branches:
            keys = [array_key(si, bi) for bi in rc_branches]
            tables = [np.ascontiguousarray(arrays[f"{key}_rc_table"]) for key in keys]
            steps = [level_table(t, arrays[f"{key}_rc_thresholds"])
                     for t, key in zip(tables, keys, strict=True)]
            offs, lanes, start, combined = combined_tables(
                tables, [window_offsets(stage.branches[bi].rc, n_or) for bi in rc_branches])
            levels = np.concatenate([lv for lv, _ in steps])
            lengths = np.array([len(lv) for lv, _ in steps], np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            bases = np.array([b for _, b in steps], np.int64)
            # lane O j + r (branch j, orientation r) writes map 1 + O j + r with branch j's step
            self.rc = (offs, lanes, start, combined, levels, np.repeat(starts, n_or),
                       np.repeat(lengths, n_or), np.repeat(bases, n_or),
                       np.arange(1, self.n_maps, dtype=np.int64))
            self.rc_args = self.rc
        self.interval = spec.interval
        self.levels = spec.levels
        self.den = division_type(self.divisor)
        self.name = f"stage{si + 1}"

    def fused_args(self) -> tuple:
        """This stage's arguments to :func:`lut_two_stages`."""
        head = (self.pad, self.reach, self.half, self.n_maps, self.reads, self.n_inputs,
                self.row_start, self.tables)
        rescale = (self.den, self.residual) if self.last else (self.bias, self.den)
        return head + rescale + (self.rc is not None,) + self.rc_args

    def new_maps(self, n_planes: int, h: int, w: int) -> np.ndarray:
        return np.empty((n_planes, self.n_maps, h + 2 * self.pad, w + 2 * self.pad), np.uint8)

    def run(self, maps: np.ndarray, out: np.ndarray, image: np.ndarray, out_pad: int = 0,
            c0: int = 0) -> None:
        """Stage input ``maps`` (map 0 filled, padding included) -> ``out``: the next stage's
        maps (map 0 filled) or, for the last stage, channels ``c0..`` of the (H*s, W*s, C)
        output; ``image`` (H, W, C) is the model's input, which a residual last stage adds."""
        p = self.pad
        t = time.perf_counter()
        if self.rc is not None:
            rc_stage_maps(maps, p, *self.rc)
            t = _lap("rc", t)
            _fill_edge_rows(maps, p, 1, self.n_maps)
            t = _lap("copies", t)
        if self.last:
            lut_stage_block(maps, p, self.reads, self.n_inputs, self.row_start, self.tables,
                            self.interval, self.levels, self.den, self.out_scale, out, c0,
                            self.residual, image)
        else:
            lut_stage_single(maps, p, self.reads, self.n_inputs, self.row_start, self.tables,
                             self.interval, self.levels, self.bias, self.den, out, out_pad)
            t = _lap(self.name, t)
            _fill_edge_rows(out, out_pad, 0, 1)
            _lap("copies", t)
            return
        _lap(self.name, t)


def _fill_edge_rows(maps: np.ndarray, pad: int, first: int, stop: int) -> None:
    """Edge-replicate the top and bottom ``pad`` rows of maps ``first:stop``."""
    if pad:
        h = maps.shape[2]
        maps[:, first:stop, :pad] = maps[:, first:stop, pad:pad + 1]
        maps[:, first:stop, h - pad:] = maps[:, first:stop, h - pad - 1:h - pad]


def check_threads(n: int | None) -> int | None:
    """A thread count numba can use (or None for all); ValueError otherwise."""
    if n is not None and not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be 1..{numba.config.NUMBA_NUM_THREADS}, got {n}")
    return n


@contextmanager
def _threads(n: int | None):
    if check_threads(n) is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ---- arithmetic: the project's exact integers, or SR-LUT's own ----------------------------
ARITHMETICS = ("integer", "srlut")


def default_arithmetic(spec: ModelSpec) -> str:
    """``"srlut"`` for SR-LUT's published LUTs (its ``.npy`` files, and bundles converted from
    one): they reproduce SR-LUT's own outputs only with its arithmetic; ``"integer"`` else."""
    return "srlut" if spec.extra.get("imported_from") == SRLUT_SOURCE else "integer"


def check_arithmetic(spec: ModelSpec, arithmetic: str) -> str:
    """``arithmetic`` if ``spec`` can run with it; ValueError naming the problem otherwise.

    ``"srlut"`` is defined for SR-LUT's layout only: one stage of one S branch, no RC window,
    not residual, four rotations (SR-LUT's code knows nothing else)."""
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETICS)}, "
                         f"got {arithmetic!r}")
    if arithmetic == "srlut":
        stages = spec.stages
        if (len(stages) != 1 or len(stages[0].branches) != 1 or stages[0].branches[0].rc
                or stages[0].branches[0].pattern != "S" or spec.residual
                or spec.orientations != 4):
            raise ValueError(f"arithmetic 'srlut' runs SR-LUT's layout only (one stage of one S "
                             f"branch, no RC window, not residual, four rotations), not "
                             f"{spec.describe()}; use "
                             "arithmetic 'integer'")
    return arithmetic


class _SrlutPlan:
    """SR-LUT's arithmetic (``kernels/srlut_float.py``): its LUT with columns pre-permuted per
    rotation, and where the S pattern reads under each rotation, in the image frame."""

    def __init__(self, spec: ModelSpec, arrays: dict[str, np.ndarray]):
        lut = arrays[f"{array_key(0, 0)}_lut"]
        perm = block_permutation(spec.scale)
        self.tables = np.zeros((4, *lut.shape), np.int8)
        for r in range(4):
            self.tables[r][:, perm[r]] = lut
        self.reads = np.array([[rotate_offset(dy, dx, r) for dy, dx in PATTERN_OFFSETS["S"]]
                               for r in range(4)], np.int64)
        self.interval, self.levels, self.scale = spec.interval, spec.levels, spec.scale

    def run(self, image: np.ndarray, out: np.ndarray, c0: int) -> None:
        """(H, W, C) uint8 -> channels ``c0 .. c0 + C`` of ``out`` (H*s, W*s, any)."""
        t = time.perf_counter()
        # SR-LUT pads each rotation at its bottom and right by reflection: in the image frame,
        # one reflected pixel on every side (numpy repeats the pixel of a one-pixel axis)
        padded = np.ascontiguousarray(  # np.pad keeps a Fortran-ordered input's order
            np.pad(np.moveaxis(image, 2, 0), ((0, 0), (1, 1), (1, 1)), mode="reflect"))
        t = _lap("copies", t)
        srlut_upscale(padded, self.reads, self.tables, self.interval, self.levels, self.scale,
                      out, c0)
        _lap("stage1", t)


class LutModel:
    """A loaded LUT model; ``upscale`` is the whole public surface.

    ``arithmetic``: ``"integer"`` (the project's exact arithmetic, MuLUT's rounding and edge
    padding; every model) or ``"srlut"`` (as SR-LUT's own test code computes: reflect padding,
    its simplex walk, one float rounding at the end; SR-LUT's single-LUT layout only); None
    picks :func:`default_arithmetic`.
    """

    def __init__(self, spec: ModelSpec, arrays: dict[str, np.ndarray], source: str = "<memory>",
                 arithmetic: str | None = None):
        validate_arrays(spec, arrays, where=source)
        self.spec = spec
        self.arrays = arrays
        self.source = source
        self.arithmetic = check_arithmetic(spec, arithmetic or default_arithmetic(spec))
        self._plans = [_StagePlan(spec, si, arrays) for si in range(len(spec.stages))]
        self._srlut = _SrlutPlan(spec, arrays) if self.arithmetic == "srlut" else None
        self.fuse = True  # two-stage models in one launch (tests compare with per-stage launches)

    @property
    def scale(self) -> int:
        return self.spec.scale

    def __repr__(self):
        return f"LutModel({self.spec.describe()}, {self.arithmetic} arithmetic, from {self.source})"

    # ---- planes --------------------------------------------------------------------------
    def _upscale_untiled(self, image: np.ndarray, out: np.ndarray, c0: int) -> None:
        """(H, W, C) C-contiguous uint8 -> channels ``c0 .. c0 + C`` of ``out`` (H*s, W*s, any),
        C-contiguous: all channels in each launch.

        Two-stage models (MuLUT, RC-LUT) run as one launch, in bands of rows that recompute the
        few stage-1 rows they share; while profiling, each stage runs as its own launches so
        that their times can be told apart.
        """
        h, w, n = image.shape
        if self._srlut is not None:
            self._srlut.run(image, out, c0)
            return
        if len(self._plans) == 2 and self.fuse and _profile is None:
            self._run_fused(image, out, c0)
            return
        t = time.perf_counter()
        maps = self._plans[0].new_maps(n, h, w)
        pad_planes(image, maps, self._plans[0].pad)
        t = _lap("copies", t)
        for plan, after in zip(self._plans, self._plans[1:] + [None], strict=True):
            if after is None:
                plan.run(maps, out, image, c0=c0)
            else:
                t = time.perf_counter()
                nxt = after.new_maps(n, h, w)
                _lap("copies", t)
                plan.run(maps, nxt, image, after.pad)
                maps = nxt

    def _fused(self, image: np.ndarray, tile) -> bool:
        """Whether ``image`` runs as one fused launch (two stages, no tiling)."""
        h, w = image.shape[:2]
        return len(self._plans) == 2 and self.fuse and (tile is None or (h <= tile and w <= tile))

    def _run_fused(self, image: np.ndarray, out: np.ndarray, c0: int, colour=None) -> None:
        first, last = self._plans
        h, _, n = image.shape
        # bands: a multiple of the threads, at least two tasks per thread where planes are few
        bands = min(h, max(1, numba.get_num_threads() * max(1, 2 // n)))
        run_tasks(lut_two_stages, n * bands, np.ascontiguousarray(image), bands,
                  self.spec.interval, self.spec.levels, self.scale, *first.fused_args(),
                  *last.fused_args(), out, c0, *(colour or _NO_COLOUR))

    def upscale_channels(self, image: np.ndarray, tile: int | None = DEFAULT_TILE,
                         out: np.ndarray | None = None, c0: int = 0) -> np.ndarray:
        """Independent uint8 channels (H, W, C) -> (H*scale, W*scale, C), in tiles of ``tile``
        LR pixels; written into channels ``c0 .. c0 + C`` of ``out`` (a C-contiguous
        (H*scale, W*scale, any) array) when given."""
        h, w, n = image.shape
        s, m = self.scale, self.spec.margin
        if out is None:
            out = np.empty((h * s, w * s, n), np.uint8)
        if tile is None or (h <= tile and w <= tile):
            t = time.perf_counter()
            image = np.ascontiguousarray(image)
            _lap("copies", t)
            self._upscale_untiled(image, out, c0)
            return out
        for y0 in range(0, h, tile):
            y1 = min(h, y0 + tile)
            for x0 in range(0, w, tile):
                x1 = min(w, x0 + tile)
                # the crop reaches `m` pixels past the tile (or the true border, where edge
                # replication then matches the untiled run exactly)
                cy0, cy1, cx0, cx1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
                t = time.perf_counter()
                sr = np.empty(((cy1 - cy0) * s, (cx1 - cx0) * s, n), np.uint8)
                crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
                _lap("copies", t)
                self._upscale_untiled(crop, sr, 0)
                t = time.perf_counter()
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s, c0:c0 + n] = \
                    sr[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
                _lap("copies", t)
        return out

    def upscale_plane(self, plane: np.ndarray, tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """One uint8 channel (H, W) -> (H*scale, W*scale), in tiles of ``tile`` LR pixels."""
        return self.upscale_channels(plane[:, :, None], tile)[:, :, 0]

    # ---- images --------------------------------------------------------------------------
    def upscale(self, image: np.ndarray, threads: int | None = None, luma_only: bool = False,
                tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """Upscale a uint8 image: HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA)."""
        image = _check_image(image)
        if tile is not None and (not isinstance(tile, (int, np.integer)) or tile < 1):
            raise ValueError(f"tile must be a positive integer or None, got {tile!r}")
        with _threads(threads):
            if image.ndim == 2:
                return self.upscale_plane(image, tile)
            h, w, n = image.shape
            s = self.scale
            out = np.empty((h * s, w * s, n), np.uint8)
            if luma_only:
                self._upscale_luma_only(image[..., :3], tile, out)
            else:
                self.upscale_channels(image[..., :3], tile, out)
            if n == 4:
                from .bicubic import upscale as bicubic_upscale
                # alpha is a coverage mask, not texture: smooth bicubic is the honest upscale
                out[..., 3] = bicubic_upscale(image[..., 3], s)
            return out

    def _upscale_luma_only(self, rgb: np.ndarray, tile, out: np.ndarray) -> None:
        from .bicubic import _contributions
        from .imaging import YCC_INVERSE, YCC_OFFSET, rgb_to_ycbcr
        t = time.perf_counter()
        ycc = rgb_to_ycbcr(rgb)
        y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8)
        chroma = np.ascontiguousarray(np.moveaxis(ycc[..., 1:], -1, 0))
        (h, w), s = y.shape, self.scale
        rw, ri = _contributions(h, h * s, float(s))  # imresize(., s): rows first, then columns
        cw, ci = _contributions(w, w * s, float(s))
        colour = (chroma, np.ascontiguousarray(rw), np.ascontiguousarray(ri),
                  np.ascontiguousarray(cw), np.ascontiguousarray(ci), YCC_INVERSE, YCC_OFFSET,
                  out)
        t = _lap("colour", t)
        y_up = np.empty((h * s, w * s, 1), np.uint8)
        if self._fused(y[:, :, None], tile) and _profile is None:
            self._run_fused(y[:, :, None], y_up, 0, colour)  # Y and colour in one launch
            return
        self.upscale_channels(y[:, :, None], tile, y_up)
        t = time.perf_counter()
        upscale_chroma_to_rgb(y_up, *colour)
        _lap("colour", t)


# placeholders for the fused kernel's colour arguments when it runs without them; the None
# (no RGB output) makes numba compile the kernel without its colour code
_NO_COLOUR = (np.zeros((2, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1), np.int64), np.zeros((1, 1)),
              np.zeros((1, 1), np.int64), np.zeros((3, 3)), np.zeros(3), None)


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected HxW, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return np.ascontiguousarray(image)


# ---- loading -----------------------------------------------------------------------------
MODELS_DIR = Path(__file__).with_name("models")
DEFAULT_SCALE = 4


def embedded_model_path(scale: int) -> Path:
    """Where the embedded default model of ``scale`` lives (it may be absent)."""
    return MODELS_DIR / f"rclut_x{scale}.npz"


def embedded_scales() -> list[int]:
    """The scales that have an embedded default model, sorted."""
    return sorted(s for s in range(1, 9) if embedded_model_path(s).is_file())


DEFAULT_MODEL = embedded_model_path(DEFAULT_SCALE)


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 8:
        raise ValueError(f"scale must be an integer 1..8, got {scale!r}")
    return int(scale)


def load_model(path=None, scale: int | None = None, arithmetic: str | None = None) -> LutModel:
    """Load a bundle (``.npz``), a MuLUT LUT folder, or an SR-LUT ``.npy``.

    ``path=None`` loads the embedded default model of ``scale`` (default 4); with a path,
    ``scale`` (when given) must be the model's own.  ``arithmetic``: ``"integer"`` or
    ``"srlut"`` (see :class:`LutModel`); None = SR-LUT's for SR-LUT's published LUTs, integer
    for everything else.  Problems raise :class:`BundleError` or ValueError, one line each.
    """
    if scale is not None:
        scale = _check_scale(scale)
    if path is None:
        scale = DEFAULT_SCALE if scale is None else scale
        path = embedded_model_path(scale)
        if not path.is_file():
            have = ", ".join(f"x{s}" for s in embedded_scales()) or "none"
            raise BundleError(f"no default model for x{scale} is embedded in this build of "
                              f"rclut_numba (embedded: {have}); pass a bundle, a MuLUT LUT "
                              "folder or an SR-LUT .npy file")
    path = Path(path)
    if path.is_dir():
        from .importers import import_mulut_folder
        spec, arrays = import_mulut_folder(path)
    elif path.suffix == ".npy":
        from .importers import import_srlut_file
        spec, arrays = import_srlut_file(path)
    else:
        spec, arrays = load_bundle(path)
    if scale is not None and spec.scale != scale:
        raise BundleError(f"{path}: an x{spec.scale} model, but scale {scale} was asked for; "
                          f"leave the scale out or give an x{scale} model")
    return LutModel(spec, arrays, source=str(path), arithmetic=arithmetic)

"""The deployed engine: validates and converts, then hands planes to the numba kernels.

``LutModel.upscale`` takes and returns uint8 arrays (HxW, HxWx3, HxWx4).  Colour channels run
independently, as the papers do; alpha is upscaled with bicubic; ``luma_only`` runs the LUTs on
Y only and bicubic on chroma.  Large images run in overlapping tiles whose overlap covers the
model's receptive field, so the output equals the untiled one exactly while memory stays bounded.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np

from .bundle import BundleError, load_bundle, validate_arrays
from .kernels.colour import ycbcr_planes_to_rgb
from .kernels.lut_stage import lut_stage
from .kernels.rc_window import level_table, rc_index_maps
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


# ---- geometry of the rotation ensemble ---------------------------------------------------
def rotate_offset(dy: int, dx: int, r: int) -> tuple[int, int]:
    """Offset (dy, dx) in the frame of ``numpy.rot90(image, r)`` expressed in the image's frame."""
    for _ in range(r % 4):
        dy, dx = dx, -dy
    return dy, dx


def block_permutation(scale: int) -> np.ndarray:
    """perm[r, k]: where output-block entry k (row-major, rotated frame) lands in the image frame."""
    perm = np.empty((4, scale * scale), np.int64)
    for r in range(4):
        for ky in range(scale):
            for kx in range(scale):
                a, b = ky, kx
                for _ in range(r):
                    a, b = b, scale - 1 - a
                perm[r, ky * scale + kx] = a * scale + b
    return perm


def window_offsets(n: int) -> np.ndarray:
    """(4, n*n, 2) RC window offsets per rotation; row p = n*i + j is offset (i - n//2, j - n//2)."""
    c = n // 2
    out = np.empty((4, n * n, 2), np.int64)
    for r in range(4):
        for i in range(n):
            for j in range(n):
                out[r, n * i + j] = rotate_offset(i - c, j - c, r)
    return out


class _StagePlan:
    """Everything a stage kernel needs that does not depend on the image."""

    def __init__(self, spec: ModelSpec, si: int, arrays: dict[str, np.ndarray]):
        stage = spec.stages[si]
        nb = len(stage.branches)
        last = si == len(spec.stages) - 1
        self.out_scale = spec.scale if last else 1
        self.divisor, self.bias = spec.stage_rescale(si)
        self.offsets = np.zeros((nb, 4, 4, 2), np.int64)
        self.n_inputs = np.zeros(nb, np.int64)
        self.row_start = np.zeros(nb, np.int64)
        self.map_index = np.zeros((nb, 4), np.int64)
        self.rc = []  # (window offsets, half window, table, level look-up, its base)
        luts = []
        row = 0
        n_maps = 1
        for bi, br in enumerate(stage.branches):
            key = array_key(si, bi)
            pattern = PATTERN_OFFSETS[br.pattern]
            self.n_inputs[bi] = len(pattern)
            for r in range(4):
                for t, (dy, dx) in enumerate(pattern):
                    self.offsets[bi, r, t] = rotate_offset(dy, dx, r)
            self.row_start[bi] = row
            lut = arrays[f"{key}_lut"]
            luts.append(lut)
            row += lut.shape[0]
            if br.rc:
                self.map_index[bi] = np.arange(n_maps, n_maps + 4)
                n_maps += 4
                table = np.ascontiguousarray(arrays[f"{key}_rc_table"])
                levels, base = level_table(table, arrays[f"{key}_rc_thresholds"])
                self.rc.append((window_offsets(br.rc), br.rc // 2, table, levels, base))
        self.n_maps = n_maps
        self.tables = np.ascontiguousarray(np.concatenate(luts, axis=0))
        self.perm = block_permutation(self.out_scale)
        self.interval = spec.interval
        self.levels = spec.levels
        self.name = f"stage{si + 1}"

    def run(self, plane: np.ndarray) -> np.ndarray:
        h, w = plane.shape
        p = PATTERN_PAD
        t = time.perf_counter()
        maps = np.empty((self.n_maps, h + 2 * p, w + 2 * p), np.uint8)
        maps[0] = np.pad(plane, p, mode="edge")
        t = _lap("copies", t)
        m = 1
        for offsets, c, table, levels, base in self.rc:
            rc_out = np.empty((4, h, w), np.uint8)
            padded = np.pad(plane, c, mode="edge")
            t = _lap("copies", t)
            rc_index_maps(padded, offsets, table, levels, base, rc_out)
            t = _lap("rc", t)
            for r in range(4):
                maps[m + r] = np.pad(rc_out[r], p, mode="edge")
            m += 4
            t = _lap("copies", t)
        out = np.empty((h * self.out_scale, w * self.out_scale), np.uint8)
        lut_stage(maps, self.map_index, self.offsets, self.n_inputs, self.row_start, self.tables,
                  self.perm, self.interval, self.levels, self.bias, self.divisor, p, out)
        _lap(self.name, t)
        return out


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


class LutModel:
    """A loaded LUT model; ``upscale`` is the whole public surface."""

    def __init__(self, spec: ModelSpec, arrays: dict[str, np.ndarray], source: str = "<memory>"):
        validate_arrays(spec, arrays, where=source)
        self.spec = spec
        self.arrays = arrays
        self.source = source
        self._plans = [_StagePlan(spec, si, arrays) for si in range(len(spec.stages))]

    @property
    def scale(self) -> int:
        return self.spec.scale

    def __repr__(self):
        return f"LutModel({self.spec.describe()}, from {self.source})"

    # ---- planes --------------------------------------------------------------------------
    def _upscale_plane_untiled(self, plane: np.ndarray) -> np.ndarray:
        x = plane
        for plan in self._plans:
            x = plan.run(x)
        return x

    def upscale_plane(self, plane: np.ndarray, tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """One uint8 channel (H, W) -> (H*scale, W*scale), in tiles of ``tile`` LR pixels."""
        h, w = plane.shape
        if tile is None or (h <= tile and w <= tile):
            return self._upscale_plane_untiled(plane)
        s, m = self.scale, self.spec.margin
        out = np.empty((h * s, w * s), np.uint8)
        for y0 in range(0, h, tile):
            y1 = min(h, y0 + tile)
            for x0 in range(0, w, tile):
                x1 = min(w, x0 + tile)
                # the crop reaches `m` pixels past the tile (or the true border, where edge
                # replication then matches the untiled run exactly)
                cy0, cy1, cx0, cx1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
                t = time.perf_counter()
                crop = np.ascontiguousarray(plane[cy0:cy1, cx0:cx1])
                _lap("copies", t)
                sr = self._upscale_plane_untiled(crop)
                t = time.perf_counter()
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s] = sr[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
                _lap("copies", t)
        return out

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
            rgb, alpha = image[..., :3], image[..., 3] if image.shape[2] == 4 else None
            if luma_only:
                rgb_out = self._upscale_luma_only(rgb, tile)
            else:
                planes = []
                for c in range(3):
                    t = time.perf_counter()
                    plane = np.ascontiguousarray(rgb[..., c])
                    _lap("copies", t)
                    planes.append(self.upscale_plane(plane, tile))
                t = time.perf_counter()
                rgb_out = np.stack(planes, axis=-1)
                _lap("copies", t)
            if alpha is None:
                return rgb_out
            from .bicubic import upscale as bicubic_upscale
            # alpha is a coverage mask, not texture: smooth bicubic is the honest upscale
            return np.concatenate([rgb_out, bicubic_upscale(alpha, self.scale)[..., None]], axis=-1)

    def _upscale_luma_only(self, rgb: np.ndarray, tile) -> np.ndarray:
        from .bicubic import upscale as bicubic_upscale
        from .imaging import YCC_INVERSE, YCC_OFFSET, rgb_to_ycbcr
        t = time.perf_counter()
        ycc = rgb_to_ycbcr(rgb)
        y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8)
        _lap("colour", t)
        y_up = self.upscale_plane(y, tile)
        t = time.perf_counter()
        chroma_up = np.ascontiguousarray(bicubic_upscale(ycc[..., 1:], self.scale))
        out = np.empty(y_up.shape + (3,), np.uint8)
        ycbcr_planes_to_rgb(y_up, chroma_up, YCC_INVERSE, YCC_OFFSET, out)
        _lap("colour", t)
        return out


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
DEFAULT_MODEL = Path(__file__).with_name("models") / "rclut_x4.npz"


def load_model(path=None) -> LutModel:
    """Load a bundle (``.npz``), a MuLUT LUT folder, or an SR-LUT ``.npy``; None = the default."""
    if path is None:
        if not DEFAULT_MODEL.is_file():
            raise BundleError("no default model is embedded in this build of rclut_numba; "
                              "pass a bundle, a MuLUT LUT folder or an SR-LUT .npy file")
        path = DEFAULT_MODEL
    path = Path(path)
    if path.is_dir():
        from .importers import import_mulut_folder
        spec, arrays = import_mulut_folder(path)
    elif path.suffix == ".npy":
        from .importers import import_srlut_file
        spec, arrays = import_srlut_file(path)
    else:
        spec, arrays = load_bundle(path)
    return LutModel(spec, arrays, source=str(path))

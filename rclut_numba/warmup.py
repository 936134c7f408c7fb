"""Compile ahead of the first image: every kernel a model can run, on tiny images.

numba compiles a kernel the first time it is called with new argument types and writes the
machine code to its on-disk cache (``__pycache__`` beside the kernels, or ``NUMBA_CACHE_DIR``);
later processes load it from there in milliseconds.  ``rclut warmup`` (:func:`warm_up`) makes
that first call for every path of :meth:`LutModel.upscale` (gray, RGB, RGBA, luma-only, whole
and tiled, each arithmetic the model allows) and for the bicubic resampling of ``rclut eval``,
so that a device image or container built with it starts its first real image at once.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TINY = 8  # LR side of the warm-up images; TILE below makes the tiled path run too
TILE = 4


def compilations() -> int:
    """numba compilations so far in this process (cache misses of rclut_numba's kernels).

    A miss is counted before numba compiles, so a rise means "compiling now"."""
    from numba.core.dispatcher import Dispatcher
    seen, total = set(), 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("rclut_numba") or module is None:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and id(obj) not in seen:
                seen.add(id(obj))
                try:
                    total += sum(obj.stats.cache_misses.values())
                except RuntimeError:  # the counter grew while read: a compile has started
                    total += 1
    return total


def cache_dir() -> Path:
    """Where numba keeps the compiled kernels of this installation (for the engine's kernel
    module; NUMBA_CACHE_DIR, when set, decides it)."""
    from .kernels import lut_stage
    return Path(lut_stage.lut_two_stages._cache._cache_path)


def _arithmetic_variants(model) -> list:
    """``model`` under each arithmetic its layout allows (SR-LUT's runs both)."""
    from .engine import ARITHMETICS, LutModel, check_arithmetic
    variants = []
    for arithmetic in ARITHMETICS:
        if arithmetic == model.arithmetic:
            variants.append(model)
            continue
        try:
            check_arithmetic(model.spec, arithmetic)
        except ValueError:  # not this model's layout
            continue
        variants.append(LutModel(model.spec, model.arrays, model.source, arithmetic=arithmetic))
    return variants


def warm_up(model) -> int:
    """Run every kernel path ``model`` can take, and ``rclut eval``'s bicubic downscale, on
    tiny images; returns how many functions numba compiled (0: all came from its cache)."""
    from .bicubic import downscale
    before = compilations()
    rng = np.random.default_rng(0)
    for variant in _arithmetic_variants(model):
        for channels in (None, 3, 4):
            shape = (TINY, TINY) if channels is None else (TINY, TINY, channels)
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            for luma_only in (False, True) if channels else (False,):
                for tile in (None, TILE):
                    variant.upscale(image, threads=1, luma_only=luma_only, tile=tile)
    for shape in ((2 * TINY, 2 * TINY), (2 * TINY, 2 * TINY, 3)):
        downscale(np.zeros(shape, np.uint8), model.scale)
    return compilations() - before

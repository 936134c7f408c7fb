"""Colour for luma-only upscaling: LUT-upscaled Y plus bicubic chroma -> RGB.

``upscale_chroma_to_rgb`` (bicubic chroma and conversion fused, a row at a time) lives beside
the stage kernels, which also run it per band of rows; ``ycbcr_planes_to_rgb`` is its plain
twin over full-size planes.
"""
import numpy as np
from numba import prange

from .lut_stage import upscale_chroma_to_rgb  # noqa: F401  (the kernel lives with its helpers)
from .options import parallel_jit


@parallel_jit
def ycbcr_planes_to_rgb(y, chroma, inverse, offset, out):
    """out[i, j] = round_half_up(clip(inverse @ ([y, cb, cr] - offset), 0, 255)).

    y:       (H, W) uint8, the LUT-upscaled luma
    chroma:  (H, W, 2) float64, bicubic-upscaled Cb, Cr
    inverse: (3, 3) float64, the YCbCr -> RGB matrix; offset: (3,) float64
    out:     (H, W, 3) uint8
    """
    height, width = y.shape
    for i in prange(height):
        for j in range(width):
            a = np.float64(y[i, j]) - offset[0]
            b = chroma[i, j, 0] - offset[1]
            c = chroma[i, j, 1] - offset[2]
            for k in range(3):
                v = inverse[k, 0] * a + inverse[k, 1] * b + inverse[k, 2] * c
                v = min(max(v, 0.0), 255.0)
                out[i, j, k] = np.uint8(np.floor(v + 0.5))

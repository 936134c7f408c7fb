"""Fused colour kernels for luma-only upscaling: LUT-upscaled Y plus bicubic chroma -> RGB."""
import numpy as np
from numba import prange

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


@parallel_jit
def upscale_chroma_to_rgb(y, chroma, row_weights, row_index, col_weights, col_index, inverse,
                          offset, out):
    """Bicubic-upscale (Cb, Cr) and convert with the upscaled Y to RGB, a row at a time.

    The same float64 operations in the same order as ``rclut_numba.bicubic.imresize`` (rows
    first, then columns; each sum from zero in tap order) followed by
    :func:`ycbcr_planes_to_rgb`, so the result equals theirs exactly, without the full-size
    float64 chroma planes in between.

    y:           (H*s, W*s) uint8, the LUT-upscaled luma
    chroma:      (2, H, W) float64, Cb and Cr at low resolution
    row_weights, row_index: (H*s, P) float64 / int64, the vertical pass (``imresize``'s weights)
    col_weights, col_index: (W*s, Q) float64 / int64, the horizontal pass
    out:         (H*s, W*s, 3) uint8, any strides
    """
    height, width = y.shape
    lr_w = chroma.shape[2]
    taps_r = row_weights.shape[1]
    taps_c = col_weights.shape[1]
    i00, i01, i02 = inverse[0, 0], inverse[0, 1], inverse[0, 2]
    i10, i11, i12 = inverse[1, 0], inverse[1, 1], inverse[1, 2]
    i20, i21, i22 = inverse[2, 0], inverse[2, 1], inverse[2, 2]
    o0, o1, o2 = offset[0], offset[1], offset[2]
    for i in prange(height):
        tmp = np.zeros((2, lr_w), np.float64)
        cb = np.empty(width, np.float64)
        cr = np.empty(width, np.float64)
        rgb = np.empty(3 * width, np.uint8)  # contiguous: the conversion loop vectorises
        for k in range(taps_r):
            w = row_weights[i, k]
            src = row_index[i, k]
            for ch in range(2):
                for x in range(lr_w):
                    tmp[ch, x] += w * chroma[ch, src, x]
        t0 = tmp[0]
        t1 = tmp[1]
        for j in range(width):
            b = 0.0
            c = 0.0
            for k in range(taps_c):
                w = col_weights[j, k]
                src = np.uintp(col_index[j, k])
                b += w * t0[src]
                c += w * t1[src]
            cb[j] = b
            cr[j] = c
        yi = y[i]
        for j in range(width):
            a = np.float64(yi[j]) - o0
            b = cb[j] - o1
            c = cr[j] - o2
            r = i00 * a + i01 * b + i02 * c
            g = i10 * a + i11 * b + i12 * c
            u = i20 * a + i21 * b + i22 * c
            # clip as selects (min/max do not vectorise here), then round half up
            r = 0.0 if r < 0.0 else (255.0 if r > 255.0 else r)
            g = 0.0 if g < 0.0 else (255.0 if g > 255.0 else g)
            u = 0.0 if u < 0.0 else (255.0 if u > 255.0 else u)
            rgb[3 * j] = np.uint8(np.int32(np.floor(r + 0.5)))
            rgb[3 * j + 1] = np.uint8(np.int32(np.floor(g + 0.5)))
            rgb[3 * j + 2] = np.uint8(np.int32(np.floor(u + 0.5)))
        oi = out[i]
        for j in range(width):
            oi[j, 0] = rgb[3 * j]
            oi[j, 1] = rgb[3 * j + 1]
            oi[j, 2] = rgb[3 * j + 2]

"""SR-LUT's own arithmetic for its single-LUT models (``arithmetic="srlut"``), with its helpers
(numba's cache is keyed on this file).

SR-LUT's test code differs from the project's integer arithmetic (``lut_stage``) in three ways,
all reproduced here:

* each rotation reads its bottom and right neighbours past the image by **reflection**
  (``numpy.pad(mode="reflect")`` of the rotated image); in the image frame that is a one-pixel
  reflect padding on every side, which the caller provides;
* its 4-simplex walk is a table of 24 comparison cases, one of which is out of order: when the
  fractions are ``fc > fd > fa > fb`` it walks the dimensions as c, a, d, b (a negative weight
  ``fa - fd``) instead of c, d, a, b.  :func:`_vertex_order` gives the walk;
* the four rotations' sums (each divided by ``interval``) are added, then ``/ 255``, clipped to
  [0, 1], ``* 255`` and rounded half to even once, in float64.

SR-LUT computes the interpolation in float32, but every weight is an integer and every partial
sum an integer below 2**24, so it is exact; here it is an int32 sum, which is the same number and
cannot depend on evaluation order or FMA.  The only inexact steps are the float64 division by
255 and the multiplication by 255 that follow it: single correctly rounded IEEE operations with
nothing to fuse, so the bytes are the same on every platform (fastmath stays off).  They never
decide a result either: for every reachable sum they round as round-half-even of the exact
value would (``tests/test_srlut_arithmetic.py`` checks all of them).
"""
import numpy as np
from numba import prange

from .options import parallel_jit, serial_jit


@serial_jit
def _vertex_order(fa, fb, fc, fd):
    """The dimensions (0..3 for a, b, c, d) in the order SR-LUT's table walks them.

    By decreasing fraction (the order among equal fractions does not change the result: the
    weight between them is zero), except for SR-LUT's one out-of-order case."""
    if fc > fd and fd > fa and fa > fb:
        return 2, 0, 3, 1
    # (fraction, dimension) packed as fraction * 4 + dimension, sorted largest first by a
    # five-exchange sorting network (no allocation, no data-dependent loop)
    ka, kb, kc, kd = fa * 4, fb * 4 + 1, fc * 4 + 2, fd * 4 + 3
    ka, kb = max(ka, kb), min(ka, kb)
    kc, kd = max(kc, kd), min(kc, kd)
    ka, kc = max(ka, kc), min(ka, kc)
    kb, kd = max(kb, kd), min(kb, kd)
    kb, kc = max(kb, kc), min(kb, kc)
    return ka & 3, kb & 3, kc & 3, kd & 3


@serial_jit
def _srlut_row(padded, plane, y, reads, tables, shift, interval, levels, scale, out, c0, acc):
    """Output rows of LR row ``y`` of one plane: every pixel's s x s block.

    ``acc`` (W * s * s int32) holds the row's blocks while the rotations add into them.  Flat
    positions are unsigned (numba then emits no negative-index wraparound); every read stays
    inside the one-pixel padding and the table, as the caller guarantees."""
    padded_w = padded.shape[2]
    width = padded_w - 2
    n_block = scale * scale
    table_rows = tables.shape[1]
    n_cols = tables.shape[2]
    pixels = padded[plane].reshape(padded_w * padded.shape[1])
    flat_tables = tables.reshape(tables.size)
    strides = (levels * levels * levels, levels * levels, levels, 1)
    mask = interval - 1
    offsets = np.empty((4, 4), np.int64)  # flat offset of input t under rotation r
    for r in range(4):
        for t in range(4):
            offsets[r, t] = reads[r, t, 0] * padded_w + reads[r, t, 1]
    acc[:] = 0
    for x in range(width):
        centre = (y + 1) * padded_w + x + 1
        block = np.uintp(x * n_block)
        for r in range(4):
            va = np.int32(pixels[np.uintp(centre + offsets[r, 0])])
            vb = np.int32(pixels[np.uintp(centre + offsets[r, 1])])
            vc = np.int32(pixels[np.uintp(centre + offsets[r, 2])])
            vd = np.int32(pixels[np.uintp(centre + offsets[r, 3])])
            fa, fb, fc, fd = va & mask, vb & mask, vc & mask, vd & mask
            o0, o1, o2, o3 = _vertex_order(fa, fb, fc, fd)
            frac = (fa, fb, fc, fd)
            f0, f1, f2, f3 = frac[o0], frac[o1], frac[o2], frac[o3]
            w0 = np.int32(interval - f0)
            w1 = np.int32(f0 - f1)
            w2 = np.int32(f1 - f2)
            w3 = np.int32(f2 - f3)
            w4 = np.int32(f3)
            row0 = ((va >> shift) * strides[0] + (vb >> shift) * strides[1]
                    + (vc >> shift) * strides[2] + (vd >> shift))
            row1 = row0 + strides[o0]
            row2 = row1 + strides[o1]
            row3 = row2 + strides[o2]
            row4 = row3 + strides[o3]
            base = r * table_rows
            j0 = np.uintp((base + row0) * n_cols)
            j1 = np.uintp((base + row1) * n_cols)
            j2 = np.uintp((base + row2) * n_cols)
            j3 = np.uintp((base + row3) * n_cols)
            j4 = np.uintp((base + row4) * n_cols)
            for k in range(n_block):
                uk = np.uintp(k)
                acc[block + uk] += np.int32(
                    w0 * np.int32(flat_tables[j0 + uk]) + w1 * np.int32(flat_tables[j1 + uk])
                    + w2 * np.int32(flat_tables[j2 + uk]) + w3 * np.int32(flat_tables[j3 + uk])
                    + w4 * np.int32(flat_tables[j4 + uk]))
    channel = c0 + plane
    inverse_interval = 1.0 / np.float64(interval)  # exact: the interval is a power of two
    for ky in range(scale):
        dst = out[y * scale + ky]
        for x in range(width):
            for kx in range(scale):
                total = acc[np.uintp(x * n_block + ky * scale + kx)]
                # SR-LUT: (sum of the rotations / interval) / 255, clip to [0, 1], * 255, round
                value = np.float64(total) * inverse_interval / 255.0
                value = min(max(value, 0.0), 1.0) * 255.0
                dst[x * scale + kx, channel] = np.uint8(np.rint(value))


@parallel_jit
def srlut_upscale(padded, reads, tables, interval, levels, scale, out, c0):
    """A one-LUT S-pattern model on every plane, as SR-LUT's test code computes it.

    padded:   (planes, H + 2, W + 2) uint8, C-contiguous, each plane reflect-padded by one
              pixel on every side
    reads:    (4, 4, 2) int64, the (dy, dx) of input t of the pattern under rotation r, in the
              image frame (each within -1..1)
    tables:   (4, rows, >= s*s) int8, C-contiguous: the LUT with its columns placed, per
              rotation, where they land in the image-frame block (row-major)
    interval: a power of two, the LUT's sampling interval; ``levels`` = 256 // interval + 1
    out:      (H * s, W * s, channels) uint8; plane p is written to channel ``c0 + p``
    """
    n_planes, padded_h, padded_w = padded.shape
    height = padded_h - 2
    shift = 0
    while (1 << shift) < interval:
        shift += 1
    n_rows = n_planes * height
    n_chunks = min(n_rows, 32)  # chunks of rows: the accumulator is allocated per chunk
    for chunk in prange(n_chunks):
        acc = np.empty((padded_w - 2) * scale * scale, np.int32)
        for task in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = task // height
            _srlut_row(padded, plane, task - plane * height, reads, tables, shift, interval,
                       levels, scale, out, c0, acc)

"""One stage of a LUT model: every branch, every rotation, one output block per pixel.

Each low-resolution pixel computes all its branches and rotations and writes its own output
block, so the parallel loop over rows has no races by construction.  Rotations are handled by
reading pre-rotated pattern offsets and writing through a block permutation instead of rotating
the image, which keeps one pass over memory.
"""
import numpy as np
from numba import prange

from .options import parallel_jit, serial_jit


@serial_jit
def _round_half_even_div(num, den):
    """round(num / den), ties to even, for integers (den > 0)."""
    q = num // den
    rem = num - q * den
    twice = 2 * rem
    if twice > den or (twice == den and (q & 1) == 1):
        q += 1
    return q


@parallel_jit
def lut_stage(maps, map_index, offsets, n_inputs, row_start, tables, perm,
              interval, levels, bias, divisor, pad, out):
    """Run one stage.

    maps:      (M, H + 2*pad, W + 2*pad) uint8, edge-padded index maps (the stage input, RC maps)
    map_index: (B, 4) int64, which map branch b reads under rotation r
    offsets:   (B, 4, 4, 2) int64, pattern offsets per branch and rotation in the original frame
    n_inputs:  (B,) int64, 4 (4D LUT, simplex-interpolated) or 1 (1D LUT, exact)
    row_start: (B,) int64, first row of each branch's LUT in ``tables``
    tables:    (rows, K) int8, all branch LUTs stacked; K = outputs per pixel (1 or scale**2)
    perm:      (4, K) int64, rotated output-block index -> original-frame block index
    bias, divisor: ``out = round(clip(acc / divisor + bias, 0, 255))``
    out:       (H * s, W * s) uint8 with s * s == K
    """
    n_branch = map_index.shape[0]
    n_out = tables.shape[1]
    height = maps.shape[1] - 2 * pad
    width = maps.shape[2] - 2 * pad
    s = out.shape[0] // height
    shift = 0
    while (1 << shift) < interval:
        shift += 1
    mask = interval - 1
    st0 = levels * levels * levels
    st1 = levels * levels
    st2 = levels
    for y in prange(height):
        acc_rot = np.zeros((4, n_out), np.int32)
        acc = np.zeros(n_out, np.int64)
        for x in range(width):
            acc_rot[:, :] = 0
            for b in range(n_branch):
                base_row = row_start[b]
                for r in range(4):
                    m = map_index[b, r]
                    if n_inputs[b] == 1:
                        v = maps[m, y + pad + offsets[b, r, 0, 0], x + pad + offsets[b, r, 0, 1]]
                        row = base_row + v
                        for k in range(n_out):
                            acc_rot[r, k] += interval * np.int32(tables[row, k])
                        continue
                    va = np.int64(maps[m, y + pad + offsets[b, r, 0, 0], x + pad + offsets[b, r, 0, 1]])
                    vb = np.int64(maps[m, y + pad + offsets[b, r, 1, 0], x + pad + offsets[b, r, 1, 1]])
                    vc = np.int64(maps[m, y + pad + offsets[b, r, 2, 0], x + pad + offsets[b, r, 2, 1]])
                    vd = np.int64(maps[m, y + pad + offsets[b, r, 3, 0], x + pad + offsets[b, r, 3, 1]])
                    # lower vertex and fractional parts; the walk to the upper vertex goes through
                    # the dimensions in order of decreasing fraction (sorting network on 4 pairs)
                    i0 = base_row + (va >> shift) * st0 + (vb >> shift) * st1 + (vc >> shift) * st2 + (vd >> shift)
                    fa = va & mask
                    fb = vb & mask
                    fc = vc & mask
                    fd = vd & mask
                    sa = st0
                    sb = st1
                    sc = st2
                    sd = np.int64(1)
                    if fb > fa:
                        fa, fb = fb, fa
                        sa, sb = sb, sa
                    if fd > fc:
                        fc, fd = fd, fc
                        sc, sd = sd, sc
                    if fc > fa:
                        fa, fc = fc, fa
                        sa, sc = sc, sa
                    if fd > fb:
                        fb, fd = fd, fb
                        sb, sd = sd, sb
                    if fc > fb:
                        fb, fc = fc, fb
                        sb, sc = sc, sb
                    i1 = i0 + sa
                    i2 = i1 + sb
                    i3 = i2 + sc
                    i4 = i3 + sd
                    w0 = np.int32(interval - fa)
                    w1 = np.int32(fa - fb)
                    w2 = np.int32(fb - fc)
                    w3 = np.int32(fc - fd)
                    w4 = np.int32(fd)
                    for k in range(n_out):
                        acc_rot[r, k] += (w0 * np.int32(tables[i0, k]) + w1 * np.int32(tables[i1, k])
                                          + w2 * np.int32(tables[i2, k]) + w3 * np.int32(tables[i3, k])
                                          + w4 * np.int32(tables[i4, k]))
            acc[:] = 0
            for r in range(4):
                for k in range(n_out):
                    acc[perm[r, k]] += acc_rot[r, k]
            for k in range(n_out):
                q = _round_half_even_div(acc[k] + bias * divisor, divisor)
                if q < 0:
                    q = 0
                elif q > 255:
                    q = 255
                out[y * s + k // s, x * s + k % s] = q

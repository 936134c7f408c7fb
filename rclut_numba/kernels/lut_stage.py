"""One stage of a LUT model: every branch, every rotation, one output block per pixel.

Each low-resolution pixel computes all its branches and rotations and writes its own output
block, so the parallel loop over rows has no races by construction.  Rotations are handled by
reading pre-rotated pattern offsets and writing through a block permutation instead of rotating
the image, which keeps one pass over memory.
"""
import numpy as np
from numba import prange

from .options import parallel_jit, serial_jit

KEY_SHIFT = 32  # sort keys: fraction in the high bits, the dimension's LUT stride in the low
KEY_MASK = (1 << KEY_SHIFT) - 1


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
    n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    s = out.shape[0] // height
    shift = 0
    while (1 << shift) < interval:
        shift += 1
    mask = interval - 1
    st0 = levels * levels * levels
    st1 = levels * levels
    st2 = levels
    # every pattern read as one offset into the flattened maps, relative to the anchor
    flat = maps.reshape(n_maps * padded_h * padded_w)
    lin = np.empty((n_branch, 4, 4), np.int64)
    for b in range(n_branch):
        for r in range(4):
            for t in range(4):
                lin[b, r, t] = (map_index[b, r] * padded_h * padded_w
                                + offsets[b, r, t, 0] * padded_w + offsets[b, r, t, 1])
    for y in prange(height):
        acc_rot = np.zeros((4, n_out), np.int32)
        acc = np.zeros(n_out, np.int64)
        for x in range(width):
            anchor = (y + pad) * padded_w + x + pad
            acc_rot[:, :] = 0
            for b in range(n_branch):
                base_row = row_start[b]
                for r in range(4):
                    if n_inputs[b] == 1:
                        row = base_row + flat[anchor + lin[b, r, 0]]
                        for k in range(n_out):
                            acc_rot[r, k] += interval * np.int32(tables[row, k])
                        continue
                    va = np.int64(flat[anchor + lin[b, r, 0]])
                    vb = np.int64(flat[anchor + lin[b, r, 1]])
                    vc = np.int64(flat[anchor + lin[b, r, 2]])
                    vd = np.int64(flat[anchor + lin[b, r, 3]])
                    i0 = base_row + (va >> shift) * st0 + (vb >> shift) * st1 + (vc >> shift) * st2 + (vd >> shift)
                    # order the dimensions by decreasing fraction: each key packs (fraction,
                    # stride) so a branch-free min/max sorting network moves both together
                    ka = ((va & mask) << KEY_SHIFT) | st0
                    kb = ((vb & mask) << KEY_SHIFT) | st1
                    kc = ((vc & mask) << KEY_SHIFT) | st2
                    kd = np.int64(((vd & mask) << KEY_SHIFT) | 1)
                    ka, kb = max(ka, kb), min(ka, kb)
                    kc, kd = max(kc, kd), min(kc, kd)
                    ka, kc = max(ka, kc), min(ka, kc)
                    kb, kd = max(kb, kd), min(kb, kd)
                    kb, kc = max(kb, kc), min(kb, kc)
                    fa = ka >> KEY_SHIFT
                    fb = kb >> KEY_SHIFT
                    fc = kc >> KEY_SHIFT
                    fd = kd >> KEY_SHIFT
                    i1 = i0 + (ka & KEY_MASK)
                    i2 = i1 + (kb & KEY_MASK)
                    i3 = i2 + (kc & KEY_MASK)
                    i4 = i3 + (kd & KEY_MASK)
                    w0 = np.int32(interval - fa)
                    w1 = np.int32(fa - fb)
                    w2 = np.int32(fb - fc)
                    w3 = np.int32(fc - fd)
                    w4 = np.int32(fd)
                    acc_r = acc_rot[r]
                    t0 = tables[i0]
                    t1 = tables[i1]
                    t2 = tables[i2]
                    t3 = tables[i3]
                    t4 = tables[i4]
                    for k in range(n_out):
                        acc_r[k] += (w0 * np.int32(t0[k]) + w1 * np.int32(t1[k]) + w2 * np.int32(t2[k])
                                     + w3 * np.int32(t3[k]) + w4 * np.int32(t4[k]))
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

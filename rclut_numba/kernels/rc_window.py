"""RC window kernel: an N x N window of 1D tables, summed, then a monotone 8-bit step."""
import numpy as np
from numba import prange

from .options import parallel_jit


@parallel_jit
def rc_index_maps(padded, offsets, table, thresholds, out):
    """For every pixel and rotation, the RC index ``#{k : sum_p table[p, pixel_p] >= thr[k]}``.

    padded:     (H + 2c, W + 2c) uint8, the stage input edge-padded by c = N // 2
    offsets:    (4, N*N, 2) int64, window offsets in the original frame for each rotation
    table:      (N*N, 256) int16
    thresholds: (255,) int32, ascending
    out:        (4, H, W) uint8
    """
    n_rot, height, width = out.shape
    n_pos = offsets.shape[1]
    c = (padded.shape[0] - height) // 2
    n_thr = thresholds.shape[0]
    for y in prange(height):
        for r in range(n_rot):
            for x in range(width):
                total = np.int64(0)
                for p in range(n_pos):
                    v = padded[y + c + offsets[r, p, 0], x + c + offsets[r, p, 1]]
                    total += table[p, v]
                # number of thresholds <= total (binary search over the sorted thresholds)
                lo = 0
                hi = n_thr
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if thresholds[mid] <= total:
                        lo = mid + 1
                    else:
                        hi = mid
                out[r, y, x] = lo

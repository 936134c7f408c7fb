"""RC window kernel: an N x N window of 1D tables, summed, then a monotone 8-bit step."""
import numpy as np
from numba import prange

from .options import parallel_jit


def level_table(table: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, int]:
    """The 8-bit step as a direct look-up: ``(levels, base)`` with
    ``levels[clip(total - base, 0, len - 1)] == #{k : thresholds[k] <= total}`` for every total a
    window can reach (between the sums of the table rows' minima and maxima).

    Totals below the first threshold all give 0 and those at or above the last all give 255, so
    the table only spans the reachable part of [thresholds[0] - 1, thresholds[-1]]: about 40k
    entries for trained tables, at most 225 * 65536 for any int16 table.
    """
    t = table.astype(np.int64)
    lo, hi = int(t.min(axis=1).sum()), int(t.max(axis=1).sum())
    first, last = int(thresholds[0]) - 1, int(thresholds[-1])
    a, b = min(max(lo, first), last), min(max(hi, first), last)
    totals = np.arange(a, b + 1, dtype=np.int64)
    return np.searchsorted(thresholds, totals, side="right").astype(np.uint8), a


@parallel_jit
def rc_index_maps(padded, offsets, table, levels, base, out):
    """For every pixel and rotation, the RC index ``#{k : sum_p table[p, pixel_p] >= thr[k]}``.

    padded:  (H + 2c, W + 2c) uint8, the stage input edge-padded by c = N // 2
    offsets: (4, N*N, 2) int64, window offsets in the original frame for each rotation
    table:   (N*N, 256) int16
    levels, base: the thresholds as a direct look-up (:func:`level_table`)
    out:     (4, H, W) uint8

    Row at a time: for each window position one table row (512 bytes, stays in L1) is gathered
    along a contiguous image row into an int32 accumulator (|sum| <= 225 * 32768 < 2**31).
    """
    n_rot, height, width = out.shape
    n_pos = offsets.shape[1]
    c = (padded.shape[0] - height) // 2
    top = levels.shape[0] - 1
    for y in prange(height):
        acc = np.empty(width, np.int32)
        for r in range(n_rot):
            acc[:] = 0
            for p in range(n_pos):
                src = padded[y + c + offsets[r, p, 0]]
                x0 = c + offsets[r, p, 1]
                row = table[p]
                for x in range(width):
                    acc[x] += row[src[x0 + x]]
            for x in range(width):
                out[r, y, x] = levels[min(max(acc[x] - base, 0), top)]

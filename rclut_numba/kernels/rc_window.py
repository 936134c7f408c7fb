"""RC window kernel: N x N windows of 1D tables, summed, then a monotone 8-bit step.

All the RC branches of a stage and their orientations (4 rotations, or 8 with the transpose's)
are computed together: each pixel of the widest window is read once, and one look-up of a
combined table row gives its contribution to every (branch, orientation) whose window covers
that offset (:func:`combined_tables`).
"""
import numpy as np

from .lut_stage import CHUNK, rc_stage_maps  # the kernel lives with the helpers it calls


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


def combined_tables(tables, window_offsets):
    """Regroup the window tables of a stage's RC branches by image offset.

    tables:          per branch, (N*N, 256) int16; branches ordered by decreasing N
    window_offsets:  per branch, (O, N*N, 2): row p's offset (image frame) under orientation r

    Returns ``(offsets, lanes, start, combined)``: for every offset ``(dy, dx)`` of the widest
    window, ``lanes`` (O lanes for each branch whose window covers it, widest first, rounded up
    to a multiple of 16) and, from ``start``, a (256, lanes) block of ``combined`` (int16, flat)
    whose row v holds ``table_j[p, v]`` at lane ``O j + r`` for the row p that orientation r reads
    there (zero in the lanes of branches that do not cover it).
    """
    sizes = [int(round(t.shape[0] ** 0.5)) for t in tables]
    assert sizes == sorted(sizes, reverse=True), "branches must come widest first"
    c = sizes[0] // 2
    n_or = window_offsets[0].shape[0]
    offsets, lanes, start, blocks = [], [], [], []
    pos = 0
    for dy in range(-c, c + 1):
        for dx in range(-c, c + 1):
            covering = [j for j, n in enumerate(sizes) if max(abs(dy), abs(dx)) <= n // 2]
            block = np.zeros((256, -(-n_or * len(covering) // CHUNK) * CHUNK), np.int16)
            for j in covering:
                for r in range(n_or):
                    hit = np.flatnonzero((window_offsets[j][r, :, 0] == dy)
                                         & (window_offsets[j][r, :, 1] == dx))
                    block[:, n_or * j + r] = tables[j][hit[0]]
            offsets.append((dy, dx))
            lanes.append(block.shape[1])
            start.append(pos)
            blocks.append(block.ravel())
            pos += block.size
    return (np.array(offsets, np.int64), np.array(lanes, np.int64), np.array(start, np.int64),
            np.concatenate(blocks))


def rc_index_maps(padded, offsets, table, levels, base, out):
    """One RC branch on one plane (the former kernel's interface, for transfer tests and tools).

    padded:  (H + 2c, W + 2c) uint8, the input edge-padded by c = N // 2
    offsets: (O, N*N, 2) int64, window offsets in the image frame for each orientation
    table:   (N*N, 256) int16; levels, base: :func:`level_table`
    out:     (O, H, W) uint8, the index map of each orientation
    """
    c = (padded.shape[0] - out.shape[1]) // 2
    n_or = offsets.shape[0]
    maps = np.empty((1, 1 + n_or) + padded.shape, np.uint8)
    maps[0, 0] = padded
    offs, lanes, start, combined = combined_tables([np.ascontiguousarray(table)], [offsets])
    rc_stage_maps(maps, c, offs, lanes, start, combined, np.ascontiguousarray(levels),
                  np.zeros(n_or, np.int64), np.full(n_or, len(levels), np.int64),
                  np.full(n_or, base, np.int64), np.arange(1, 1 + n_or, dtype=np.int64))
    h, w = out.shape[1:]
    out[:] = maps[0, 1:, c:c + h, c:c + w]

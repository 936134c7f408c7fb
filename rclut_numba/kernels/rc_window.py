"""RC window kernel: N x N windows of 1D tables, summed, then a monotone 8-bit step.

All the RC branches of a stage and their four rotations are computed together: each pixel of
the widest window is read once, and one look-up of a combined table row gives its contribution
to every (branch, rotation) whose window covers that offset (:func:`combined_tables`).
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .options import parallel_jit

LANES = 4  # one lane per rotation; a branch's lanes are 4 * j .. 4 * j + 3
CHUNK = 16  # combined rows are padded to a multiple of 16 lanes: one 512-bit add per chunk


@intrinsic
def _add_widened(typingctx, acc, i, src, j):
    """``acc[i:i + 16] += src[j:j + 16]`` (int32 += int16) as one vector add.

    LLVM does not vectorise this short loop by itself: it cannot tell that the two arrays do
    not overlap.  The caller guarantees the bounds.
    """
    sig = types.void(acc, types.intp, src, types.intp)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        s = context.make_array(signature.args[2])(context, builder, args[2])
        wide = ir.VectorType(ir.IntType(32), CHUNK)
        narrow = ir.VectorType(ir.IntType(16), CHUNK)
        pa = builder.bitcast(builder.gep(a.data, [args[1]]), wide.as_pointer())
        ps = builder.bitcast(builder.gep(s.data, [args[3]]), narrow.as_pointer())
        total = builder.add(builder.load(pa, align=4),
                            builder.sext(builder.load(ps, align=2), wide))
        builder.store(total, pa, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _add_widened4(typingctx, acc, i, src, j0, j1, j2, j3):
    """``acc[i:i + 16] += src[j0:j0 + 16] + ... + src[j3:j3 + 16]`` (int32 += int16): four window
    offsets per load and store of the accumulator.  The caller guarantees the bounds."""
    sig = types.void(acc, types.intp, src, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        s = context.make_array(signature.args[2])(context, builder, args[2])
        wide = ir.VectorType(ir.IntType(32), CHUNK)
        narrow = ir.VectorType(ir.IntType(16), CHUNK)
        pa = builder.bitcast(builder.gep(a.data, [args[1]]), wide.as_pointer())
        rows = [builder.sext(builder.load(builder.bitcast(builder.gep(s.data, [j]),
                                                          narrow.as_pointer()), align=2), wide)
                for j in args[3:7]]
        total = builder.add(builder.add(rows[0], rows[1]), builder.add(rows[2], rows[3]))
        builder.store(builder.add(builder.load(pa, align=4), total), pa, align=4)
        return context.get_dummy_value()

    return sig, codegen


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
    window_offsets:  per branch, (4, N*N, 2): row p's offset (image frame) under rotation r

    Returns ``(offsets, lanes, start, combined)``: for every offset ``(dy, dx)`` of the widest
    window, ``lanes`` (4 lanes for each branch whose window covers it, widest first, rounded up
    to a multiple of 16) and, from ``start``, a (256, lanes) block of ``combined`` (int16, flat)
    whose row v holds ``table_j[p, v]`` at lane ``4 j + r`` for the row p that rotation r reads
    there (zero in the lanes of branches that do not cover it).
    """
    sizes = [int(round(t.shape[0] ** 0.5)) for t in tables]
    assert sizes == sorted(sizes, reverse=True), "branches must come widest first"
    c = sizes[0] // 2
    offsets, lanes, start, blocks = [], [], [], []
    pos = 0
    for dy in range(-c, c + 1):
        for dx in range(-c, c + 1):
            covering = [j for j, n in enumerate(sizes) if max(abs(dy), abs(dx)) <= n // 2]
            block = np.zeros((256, -(-LANES * len(covering) // CHUNK) * CHUNK), np.int16)
            for j in covering:
                for r in range(4):
                    hit = np.flatnonzero((window_offsets[j][r, :, 0] == dy)
                                         & (window_offsets[j][r, :, 1] == dx))
                    block[:, LANES * j + r] = tables[j][hit[0]]
            offsets.append((dy, dx))
            lanes.append(block.shape[1])
            start.append(pos)
            blocks.append(block.ravel())
            pos += block.size
    return (np.array(offsets, np.int64), np.array(lanes, np.int64), np.array(start, np.int64),
            np.concatenate(blocks))


@parallel_jit
def rc_stage_maps(maps, pad, offsets, lanes, start, combined, levels, level_start, level_len,
                  base, lane_map):
    """For every pixel, RC branch j and rotation r: ``#{k : sum_p table_j[p, pixel_p] >= thr[k]}``.

    maps:        (planes, M, H + 2*pad, W + 2*pad) uint8; map 0 (the edge-padded stage input,
                 pad >= every window's half width) is read, and for lane l = 4 j + r the rows
                 ``pad .. pad + H`` of map ``lane_map[l]`` are written (left/right padding too)
    offsets, lanes, start, combined: :func:`combined_tables`
    levels:      the branches' level look-ups (:func:`level_table`) end to end; branch j's is
                 ``levels[level_start[j]:level_start[j] + level_len[j]]``, over totals from
                 ``base[j]``

    Row at a time: for each window offset, one combined row (all the lanes it feeds) is added
    into an int32 accumulator per pixel (|sum| <= 225 * 32768 < 2**31).
    """
    n_planes, n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    n_lanes = lane_map.shape[0]
    n_acc = -(-n_lanes // CHUNK) * CHUNK
    n_off = offsets.shape[0]
    n_rows = n_planes * height
    n_chunks = min(n_rows, 32)
    for chunk in prange(n_chunks):
        acc = np.empty((width, n_acc), np.int32)
        flat_acc = acc.reshape(width * n_acc)
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = row // height
            y = row - plane * height
            acc[:, :] = 0
            # up to 4 RC branches: every offset feeds one 16-lane chunk; four offsets at a time
            n4 = n_off - n_off % 4 if n_acc == CHUNK else 0
            for o in range(0, n4, 4):
                # unsigned indices: no negative-index wraparound in the loops below
                sa = maps[plane, 0, pad + y + offsets[o, 0]]
                sb = maps[plane, 0, pad + y + offsets[o + 1, 0]]
                sc = maps[plane, 0, pad + y + offsets[o + 2, 0]]
                sd = maps[plane, 0, pad + y + offsets[o + 3, 0]]
                xa = np.uintp(pad + offsets[o, 1])
                xb = np.uintp(pad + offsets[o + 1, 1])
                xc = np.uintp(pad + offsets[o + 2, 1])
                xd = np.uintp(pad + offsets[o + 3, 1])
                ta = np.uintp(start[o])
                tb = np.uintp(start[o + 1])
                tc = np.uintp(start[o + 2])
                td = np.uintp(start[o + 3])
                n_c = np.uintp(CHUNK)
                for x in range(width):
                    ux = np.uintp(x)
                    _add_widened4(flat_acc, x * CHUNK, combined, ta + np.uintp(sa[xa + ux]) * n_c,
                                  tb + np.uintp(sb[xb + ux]) * n_c,
                                  tc + np.uintp(sc[xc + ux]) * n_c,
                                  td + np.uintp(sd[xd + ux]) * n_c)
            for o in range(n4, n_off):
                src = maps[plane, 0, pad + y + offsets[o, 0]]
                x0 = np.uintp(pad + offsets[o, 1])
                n_l = np.uintp(lanes[o])
                s0 = np.uintp(start[o])
                for x in range(width):
                    t = s0 + np.uintp(src[x0 + np.uintp(x)]) * n_l
                    for l0 in range(0, n_l, CHUNK):
                        _add_widened(flat_acc, x * n_acc + l0, combined, t + l0)
            for lane in range(n_lanes):
                j = lane // LANES
                lv = levels[level_start[j]:level_start[j] + level_len[j]]
                top = level_len[j] - 1
                b = base[j]
                dst = maps[plane, lane_map[lane], pad + y]
                for x in range(width):
                    dst[pad + x] = lv[min(max(np.int64(acc[x, lane]) - b, 0), top)]
                for x in range(pad):
                    dst[x] = dst[pad]
                    dst[pad + width + x] = dst[pad + width - 1]


def rc_index_maps(padded, offsets, table, levels, base, out):
    """One RC branch on one plane (the former kernel's interface, for transfer tests and tools).

    padded:  (H + 2c, W + 2c) uint8, the input edge-padded by c = N // 2
    offsets: (4, N*N, 2) int64, window offsets in the image frame for each rotation
    table:   (N*N, 256) int16; levels, base: :func:`level_table`
    out:     (4, H, W) uint8, the index map of each rotation
    """
    c = (padded.shape[0] - out.shape[1]) // 2
    maps = np.empty((1, 1 + LANES) + padded.shape, np.uint8)
    maps[0, 0] = padded
    offs, lanes, start, combined = combined_tables([np.ascontiguousarray(table)], [offsets])
    rc_stage_maps(maps, c, offs, lanes, start, combined, np.ascontiguousarray(levels),
                  np.zeros(1, np.int64), np.array([len(levels)], np.int64),
                  np.array([base], np.int64), np.arange(1, 1 + LANES, dtype=np.int64))
    h, w = out.shape[1:]
    out[:] = maps[0, 1:, c:c + h, c:c + w]

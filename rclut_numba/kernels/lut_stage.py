"""One stage of a LUT model: every branch, every rotation, every colour plane in one launch.

The work is laid out a row at a time so that LLVM vectorises across pixels: for each branch and
rotation, one loop over the row computes the 4-simplex vertices and weights of every pixel (the
pattern reads, the fractions, the 4-element sort as a branch-free min/max network) into row
arrays; a second loop gathers the weighted table rows.  Rotations are handled by reading
pre-rotated pattern offsets, and, for stages with an output block, by tables whose columns are
pre-permuted per rotation, so every rotation adds straight into the image-frame block.

Stages read ``maps``: (planes, M, H + 2 P, W + 2 P) uint8, edge-padded by P, map 0 being the
stage input and maps 1.. the RC index maps.  A stage with one output per pixel writes the next
stage's map 0 (interior and left/right padding); the last stage writes the output blocks.
All arithmetic is integer and exact; one rounding (half to even) per output value.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .options import parallel_jit, serial_jit

KEY_SHIFT = 20  # sort keys: fraction in the high bits, the dimension's LUT stride (< 2**20) low
KEY_MASK = (1 << KEY_SHIFT) - 1
CHUNK = 16  # output-block tables are padded to a multiple of 16 columns: one vector each


@intrinsic
def _add_weighted_rows(typingctx, acc, i, table, j0, j1, j2, j3, j4, w0, w1, w2, w3, w4):
    """``acc[i:i+16] += w0 * table[j0:j0+16] + ... + w4 * table[j4:j4+16]`` (int32, int8 rows).

    Written as vector operations because LLVM does not vectorise this short loop by itself (it
    cannot tell that ``acc`` and ``table`` do not overlap).  The caller guarantees the bounds.
    """
    sig = types.void(acc, types.intp, table, *(types.intp,) * 5, *(types.int32,) * 5)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        t = context.make_array(signature.args[2])(context, builder, args[2])
        i32 = ir.IntType(32)
        wide = ir.VectorType(i32, CHUNK)
        narrow = ir.VectorType(ir.IntType(8), CHUNK)
        zeros = ir.Constant(ir.VectorType(i32, CHUNK), [0] * CHUNK)
        pa = builder.bitcast(builder.gep(a.data, [args[1]]), wide.as_pointer())
        total = builder.load(pa, align=4)
        for j, w in zip(args[3:8], args[8:13], strict=True):
            row = builder.load(builder.bitcast(builder.gep(t.data, [j]), narrow.as_pointer()),
                               align=1)
            splat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(wide, ir.Undefined), w, ir.Constant(i32, 0)),
                ir.Constant(wide, ir.Undefined), zeros)
            total = builder.add(total, builder.mul(builder.sext(row, wide), splat))
        builder.store(total, pa, align=4)
        return context.get_dummy_value()

    return sig, codegen


@serial_jit
def _row_chunks(n_rows, n_threads):
    """How many row chunks a parallel loop over ``n_rows`` rows is cut into."""
    return min(n_rows, 4 * n_threads)


@serial_jit
def _simplex_row(flat, a, b, c, d, width, shift, mask, st0, st1, st2, base_row, idx, wts):
    """Vertices ``idx[0..4, x]`` and weights ``wts[0..4, x]`` of a row of 4-simplex look-ups.

    The pixel x reads ``flat[a + x]``, ``flat[b + x]``, ``flat[c + x]``, ``flat[d + x]``.
    Dimensions are walked by decreasing fraction: each key packs (fraction, stride), so the
    min/max sorting network moves both together; ties in the fraction give zero weight to the
    vertex between them, so their order does not matter.
    """
    interval = mask + 1
    for x in range(width):
        va = np.int32(flat[a + x])
        vb = np.int32(flat[b + x])
        vc = np.int32(flat[c + x])
        vd = np.int32(flat[d + x])
        i0 = (np.int32(base_row) + (va >> shift) * np.int32(st0) + (vb >> shift) * np.int32(st1)
              + (vc >> shift) * np.int32(st2) + (vd >> shift))
        ka = ((va & mask) << KEY_SHIFT) | np.int32(st0)
        kb = ((vb & mask) << KEY_SHIFT) | np.int32(st1)
        kc = ((vc & mask) << KEY_SHIFT) | np.int32(st2)
        kd = ((vd & mask) << KEY_SHIFT) | np.int32(1)
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
        idx[0, x] = i0
        idx[1, x] = i1
        idx[2, x] = i2
        idx[3, x] = i3
        idx[4, x] = i3 + (kd & KEY_MASK)
        wts[0, x] = interval - fa
        wts[1, x] = fa - fb
        wts[2, x] = fb - fc
        wts[3, x] = fc - fd
        wts[4, x] = fd


@serial_jit
def _stage_constants(interval, levels):
    shift = 0
    while (1 << shift) < interval:
        shift += 1
    return shift, interval - 1, levels * levels * levels, levels * levels, levels


@serial_jit
def _read_offsets(reads, plane, n_maps, padded_h, padded_w, y, pad):
    """Flat positions of pixel 0 of row ``y`` for every (branch, rotation, input)."""
    n_branch = reads.shape[0]
    out = np.empty((n_branch, 4, 4), np.int64)
    for b in range(n_branch):
        for r in range(4):
            for t in range(4):
                out[b, r, t] = (((plane * n_maps + reads[b, r, t, 0]) * padded_h
                                 + y + pad + reads[b, r, t, 1]) * padded_w
                                + pad + reads[b, r, t, 2])
    return out


@parallel_jit
def lut_stage_single(maps, pad, reads, n_inputs, row_start, table, interval, levels, bias,
                     divisor, out, out_pad):
    """A stage with one output per pixel: the next stage's input map.

    maps:      (planes, M, H + 2*pad, W + 2*pad) uint8, the stage input and its RC maps
    reads:     (B, 4, 4, 3) int64, (map, dy, dx) of input t of branch b under rotation r
    n_inputs:  (B,) int64, 4 (4D LUT, simplex-interpolated) or 1 (1D LUT, exact)
    row_start: (B,) int64, first row of each branch's LUT in ``table``
    table:     (rows,) int8, all branch LUTs stacked
    out:       (planes, M', H + 2*out_pad, W + 2*out_pad) uint8; writes map 0's rows
               ``out_pad .. out_pad + H`` in full (the left and right padding included)
    value:     ``round_half_even(clip(acc / divisor + bias, 0, 255))``
    """
    n_planes, n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    n_branch = reads.shape[0]
    shift, mask, st0, st1, st2 = _stage_constants(interval, levels)
    flat = maps.reshape(maps.size)
    n_rows = n_planes * height
    n_chunks = _row_chunks(n_rows, 8)
    offset = np.float64(bias * divisor)
    den = np.float64(divisor)
    for chunk in prange(n_chunks):
        idx = np.empty((5, width), np.int32)
        wts = np.empty((5, width), np.int32)
        acc = np.empty(width, np.int32)
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = row // height
            y = row - plane * height
            lin = _read_offsets(reads, plane, n_maps, padded_h, padded_w, y, pad)
            acc[:] = 0
            for b in range(n_branch):
                base_row = row_start[b]
                for r in range(4):
                    if n_inputs[b] == 1:
                        a0 = lin[b, r, 0]
                        for x in range(width):
                            acc[x] += np.int32(interval) * np.int32(table[base_row + flat[a0 + x]])
                        continue
                    _simplex_row(flat, lin[b, r, 0], lin[b, r, 1], lin[b, r, 2], lin[b, r, 3],
                                 width, shift, mask, st0, st1, st2, base_row, idx, wts)
                    for x in range(width):
                        acc[x] += (wts[0, x] * np.int32(table[idx[0, x]])
                                   + wts[1, x] * np.int32(table[idx[1, x]])
                                   + wts[2, x] * np.int32(table[idx[2, x]])
                                   + wts[3, x] * np.int32(table[idx[3, x]])
                                   + wts[4, x] * np.int32(table[idx[4, x]]))
            dst = out[plane, 0, out_pad + y]
            for x in range(width):
                q = np.rint((np.float64(acc[x]) + offset) / den)
                dst[out_pad + x] = np.uint8(min(max(q, 0.0), 255.0))
            for x in range(out_pad):
                dst[x] = dst[out_pad]
                dst[out_pad + width + x] = dst[out_pad + width - 1]


@parallel_jit
def lut_stage_block(maps, pad, reads, n_inputs, row_start, tables, interval, levels, divisor,
                    scale, out):
    """The last stage: an s x s output block per pixel, ``s * s <= K``.

    maps, pad, reads, n_inputs, row_start: as :func:`lut_stage_single`
    tables:    (4, rows, K) int8, all branch LUTs stacked, K a multiple of 16 (zero columns past
               s * s); ``tables[r, :, j]`` holds the column that lands on block entry j
               (row-major, image frame) under rotation r
    out:       (planes, H * s, W * s) uint8, any strides (an interleaved RGB image's planes)
    value:     ``round_half_even(clip(acc / divisor, 0, 255))``
    """
    n_planes, n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    n_branch = reads.shape[0]
    n_out = tables.shape[2]
    shift, mask, st0, st1, st2 = _stage_constants(interval, levels)
    flat = maps.reshape(maps.size)
    n_rows = n_planes * height
    n_chunks = _row_chunks(n_rows, 8)
    den = np.float64(divisor)
    n_rows_table = tables.shape[1]
    flat_tables = tables.reshape(tables.size)
    for chunk in prange(n_chunks):
        idx = np.empty((5, width), np.int32)
        wts = np.empty((5, width), np.int32)
        acc = np.empty((width, n_out), np.int32)
        flat_acc = acc.reshape(width * n_out)
        q = np.empty((width, n_out), np.uint8)
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = row // height
            y = row - plane * height
            lin = _read_offsets(reads, plane, n_maps, padded_h, padded_w, y, pad)
            acc[:, :] = 0
            for b in range(n_branch):
                base_row = row_start[b]
                for r in range(4):
                    r0 = r * n_rows_table
                    if n_inputs[b] == 1:
                        # a 1D LUT: its exact entry, times interval (the simplex weights' sum)
                        a0 = lin[b, r, 0]
                        for x in range(width):
                            j = (r0 + base_row + np.intp(flat[a0 + x])) * n_out
                            for k0 in range(0, n_out, CHUNK):
                                _add_weighted_rows(flat_acc, x * n_out + k0, flat_tables, j + k0,
                                                   j + k0, j + k0, j + k0, j + k0,
                                                   np.int32(interval), np.int32(0), np.int32(0),
                                                   np.int32(0), np.int32(0))
                        continue
                    _simplex_row(flat, lin[b, r, 0], lin[b, r, 1], lin[b, r, 2], lin[b, r, 3],
                                 width, shift, mask, st0, st1, st2, base_row, idx, wts)
                    for x in range(width):
                        j0 = (r0 + np.intp(idx[0, x])) * n_out
                        j1 = (r0 + np.intp(idx[1, x])) * n_out
                        j2 = (r0 + np.intp(idx[2, x])) * n_out
                        j3 = (r0 + np.intp(idx[3, x])) * n_out
                        j4 = (r0 + np.intp(idx[4, x])) * n_out
                        for k0 in range(0, n_out, CHUNK):
                            _add_weighted_rows(flat_acc, x * n_out + k0, flat_tables, j0 + k0,
                                               j1 + k0, j2 + k0, j3 + k0, j4 + k0, wts[0, x],
                                               wts[1, x], wts[2, x], wts[3, x], wts[4, x])
            for x in range(width):
                for j in range(n_out):
                    v = np.rint(np.float64(acc[x, j]) / den)
                    q[x, j] = np.uint8(min(max(v, 0.0), 255.0))
            dst = out[plane]
            for ky in range(scale):
                drow = dst[y * scale + ky]
                for x in range(width):
                    for kx in range(scale):
                        drow[x * scale + kx] = q[x, ky * scale + kx]

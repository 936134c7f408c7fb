"""The LUT model's kernels, with every helper they call (numba's cache is keyed on this file).

* :func:`lut_two_stages`: a whole two-stage model (MuLUT, RC-LUT) in one launch, run on threads
  by :func:`rclut_numba.kernels.threads.run_tasks` (serial over a range of tasks: as a
  ``parallel=True`` kernel its body would be compiled four times, see ``options``).  Each
  task is a band of rows of one plane: the stage-1 rows the band needs (a few halo rows are
  recomputed by both neighbours), their RC maps and the band's output blocks go through
  band-sized buffers that stay in cache; for luma-only the band then converts its own rows
  with the bicubic chroma to RGB.  Launches are few because each costs a wake-up of the
  worker threads, which on a busy machine can be a scheduler time slice.
* :func:`rc_stage_maps`, :func:`lut_stage_single`, :func:`lut_stage_block`: one stage over all
  planes of an image per launch (models with one stage or more than two, and profiling).
* :func:`upscale_chroma_to_rgb`: bicubic chroma and YCbCr -> RGB for tiled luma-only runs.

Work is laid out a row at a time so that LLVM vectorises across pixels: for each branch and
orientation (a rotation, or a rotation of the transpose), one loop over the row computes the
4-simplex vertices and weights of every pixel (the pattern reads, the fractions, the 4-element
sort as a branch-free min/max network, all int32: 16 pixels per 512-bit vector) into row
arrays; a second loop gathers the weighted table rows.
Orientations are handled by reading pre-rotated pattern offsets, and, for the last stage, by
tables whose columns are pre-permuted per orientation, so each adds straight into the
image-frame block.  The short fixed-width loops that LLVM will not vectorise by itself (it
cannot prove that the accumulator and the table do not overlap) are written as explicit
16-lane vector operations (``@intrinsic``).  Indices are unsigned where they are computed, so
numba emits no negative-index wraparound.

All arithmetic is integer and exact; one rounding (half to even) per output value.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .options import helper_jit, inlined_jit, parallel_jit, serial_jit

KEY_SHIFT = 20  # sort keys: fraction in the high bits, the dimension's LUT stride (< 2**20) low
KEY_MASK = (1 << KEY_SHIFT) - 1
CHUNK = 16  # block tables and combined RC rows are padded to multiples of 16 lanes: one vector


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


def division_type(divisor: int):
    """The float type in which ``rint(n / divisor)`` is exactly round-half-even of n / divisor
    for every stage sum n (|n / divisor| < 1024: at most 512 from the tables, plus up to 255 in
    a residual last stage or the 127 between stages): float32 for divisors below 2**14, else
    float64.

    n / divisor lies exactly on a half-integer or at least 1 / (2 divisor) away from one, and a
    correctly rounded quotient moves by at most half a unit in the last place (2**-15 for
    float32 below 1024, 2**-44 for float64): less than 1 / (2 divisor), so ``rint`` (ties to
    even) rounds the quotient as it would the exact value.  n itself is exact (|n| < 2**24).
    """
    return np.float32(divisor) if divisor < 2 ** 14 else np.float64(divisor)


@helper_jit
def _simplex_row(flat, a, b, c, d, width, shift, mask, st0, st1, st2, base_row, row_scale, idx,
                 wts):
    """Vertices ``idx[0..4, x]`` (table rows times ``row_scale``: where they start in a flat
    table) and weights ``wts[0..4, x]`` of a row of 4-simplex look-ups.

    The pixel x reads ``flat[a + x]``, ``flat[b + x]``, ``flat[c + x]``, ``flat[d + x]``.
    Dimensions are walked by decreasing fraction: each key packs (fraction, stride), so the
    min/max sorting network moves both together; ties in the fraction give zero weight to the
    vertex between them, so their order does not matter.  Everything is int32 (LLVM then works
    on 16 pixels per 512-bit vector) and indices are unsigned (no negative-index wraparound).
    """
    shift = np.int32(shift)
    mask = np.int32(mask)
    interval = mask + np.int32(1)
    st0 = np.int32(st0)
    st1 = np.int32(st1)
    st2 = np.int32(st2)
    one = np.int32(1)
    base = np.int32(base_row)
    scale = np.int32(row_scale)
    key_shift = np.int32(KEY_SHIFT)
    key_mask = np.int32(KEY_MASK)
    a = np.uintp(a)
    b = np.uintp(b)
    c = np.uintp(c)
    d = np.uintp(d)
    i0s = idx[0]
    i1s = idx[1]
    i2s = idx[2]
    i3s = idx[3]
    i4s = idx[4]
    w0s = wts[0]
    w1s = wts[1]
    w2s = wts[2]
    w3s = wts[3]
    w4s = wts[4]
    for x in range(width):
        ux = np.uintp(x)
        i32 = np.int32  # numba widens int32 arithmetic to int64: narrow every result back
        va = i32(flat[a + ux])
        vb = i32(flat[b + ux])
        vc = i32(flat[c + ux])
        vd = i32(flat[d + ux])
        i0 = i32(base + i32(va >> shift) * st0 + i32(vb >> shift) * st1
                 + i32(vc >> shift) * st2 + i32(vd >> shift))
        ka = i32(i32(i32(va & mask) << key_shift) | st0)
        kb = i32(i32(i32(vb & mask) << key_shift) | st1)
        kc = i32(i32(i32(vc & mask) << key_shift) | st2)
        kd = i32(i32(i32(vd & mask) << key_shift) | one)
        ka, kb = max(ka, kb), min(ka, kb)
        kc, kd = max(kc, kd), min(kc, kd)
        ka, kc = max(ka, kc), min(ka, kc)
        kb, kd = max(kb, kd), min(kb, kd)
        kb, kc = max(kb, kc), min(kb, kc)
        fa = i32(ka >> key_shift)
        fb = i32(kb >> key_shift)
        fc = i32(kc >> key_shift)
        fd = i32(kd >> key_shift)
        i1 = i32(i0 + i32(ka & key_mask))
        i2 = i32(i1 + i32(kb & key_mask))
        i3 = i32(i2 + i32(kc & key_mask))
        i0s[ux] = i0 * scale
        i1s[ux] = i1 * scale
        i2s[ux] = i2 * scale
        i3s[ux] = i3 * scale
        i4s[ux] = i32(i3 + i32(kd & key_mask)) * scale
        w0s[ux] = interval - fa
        w1s[ux] = fa - fb
        w2s[ux] = fb - fc
        w3s[ux] = fc - fd
        w4s[ux] = fd


@helper_jit
def _gather_single_row(acc, table, idx, wts, width):
    """``acc[x] += sum_v wts[v, x] * table[idx[v, x]]`` for a row of pixels."""
    i32 = np.int32
    for x in range(width):
        acc[x] = i32(acc[x] + wts[0, x] * i32(table[np.uintp(idx[0, x])])
                     + wts[1, x] * i32(table[np.uintp(idx[1, x])])
                     + wts[2, x] * i32(table[np.uintp(idx[2, x])])
                     + wts[3, x] * i32(table[np.uintp(idx[3, x])])
                     + wts[4, x] * i32(table[np.uintp(idx[4, x])]))


@helper_jit
def _gather_block_row(acc, table, base, idx, wts, width, n_out):
    """``acc[x] += sum_v wts[v, x] * table[base + idx[v, x]:][:n_out]`` for a row of pixels."""
    for x in range(width):
        j0 = base + np.intp(idx[0, x])
        j1 = base + np.intp(idx[1, x])
        j2 = base + np.intp(idx[2, x])
        j3 = base + np.intp(idx[3, x])
        j4 = base + np.intp(idx[4, x])
        w0 = wts[0, x]
        w1 = wts[1, x]
        w2 = wts[2, x]
        w3 = wts[3, x]
        w4 = wts[4, x]
        for k0 in range(0, n_out, CHUNK):
            _add_weighted_rows(acc, x * n_out + k0, table, j0 + k0, j1 + k0, j2 + k0, j3 + k0,
                               j4 + k0, w0, w1, w2, w3, w4)


@helper_jit
def _stage_constants(interval, levels):
    shift = 0
    while (1 << shift) < interval:
        shift += 1
    return shift, interval - 1, levels * levels * levels, levels * levels, levels


@helper_jit
def _read_offsets(reads, plane, n_maps, buf_rows, padded_w, row, pad):
    """Flat positions of pixel 0 of buffer row ``row`` for every (branch, orientation, input)."""
    n_branch, n_orient = reads.shape[0], reads.shape[1]
    out = np.empty((n_branch, n_orient, 4), np.int64)
    for b in range(n_branch):
        for r in range(n_orient):
            for t in range(4):
                out[b, r, t] = (((plane * n_maps + reads[b, r, t, 0]) * buf_rows
                                 + row + reads[b, r, t, 1]) * padded_w
                                + pad + reads[b, r, t, 2])
    return out


# ---- one stage over a range of rows ------------------------------------------------------------
# A map buffer is (planes, M, rows, W + 2 pad) uint8: buffer row i holds image row i + row0 of
# every map, edge-padded by ``pad`` columns on each side.


@inlined_jit
def _single_rows(maps, plane, row0, pad, y_lo, y_hi, reads, n_inputs, row_start, table, interval,
                 levels, bias, den, out, out_row0, out_pad, idx, wts, acc):
    """Image rows ``y_lo .. y_hi`` of a one-output stage into map 0 of ``out`` (its buffer row
    y - out_row0, left and right padding included)."""
    n_planes, n_maps, buf_rows, padded_w = maps.shape
    width = padded_w - 2 * pad
    n_branch = reads.shape[0]
    shift, mask, st0, st1, st2 = _stage_constants(interval, levels)
    flat = maps.reshape(maps.size)
    real = type(den)
    offset = np.int32(bias * den)
    zero = real(0)
    top = real(255)
    for y in range(y_lo, y_hi):
        lin = _read_offsets(reads, plane, n_maps, buf_rows, padded_w, y - row0, pad)
        acc[:] = 0
        for b in range(n_branch):
            base_row = row_start[b]
            for r in range(reads.shape[1]):
                if n_inputs[b] == 1:
                    a0 = lin[b, r, 0]
                    for x in range(width):
                        acc[x] += np.int32(interval) * np.int32(table[base_row + flat[a0 + x]])
                    continue
                _simplex_row(flat, lin[b, r, 0], lin[b, r, 1], lin[b, r, 2], lin[b, r, 3],
                             width, shift, mask, st0, st1, st2, base_row, np.intp(1), idx, wts)
                _gather_single_row(acc, table, idx, wts, width)
        dst = out[plane, 0, y - out_row0]
        for x in range(width):
            q = np.rint(real(acc[x] + offset) / den)
            dst[out_pad + x] = np.uint8(min(max(q, zero), top))
        for x in range(out_pad):
            dst[x] = dst[out_pad]
            dst[out_pad + width + x] = dst[out_pad + width - 1]


@inlined_jit
def _block_rows(maps, plane, row0, pad, y_lo, y_hi, reads, n_inputs, row_start, tables, interval,
                levels, den, scale, out, out_c, flat_acc, flat_q, idx, wts, residual, image,
                image_c):
    """Image rows ``y_lo .. y_hi`` of the last stage: their s x s blocks into channel ``out_c``
    of ``out`` (H * s, W * s, channels).  With ``residual`` each block's sum starts from its
    model input pixel ``image[y, x, image_c]`` (times the divisor, so one rounding stays)."""
    n_planes, n_maps, buf_rows, padded_w = maps.shape
    width = padded_w - 2 * pad
    n_branch = reads.shape[0]
    n_out = tables.shape[2]
    shift, mask, st0, st1, st2 = _stage_constants(interval, levels)
    flat = maps.reshape(maps.size)
    real = type(den)
    zero = real(0)
    top = real(255)
    n_rows_table = tables.shape[1]
    flat_tables = tables.reshape(tables.size)
    base_scale = np.int32(den)  # the divisor, an integer held in a float
    for y in range(y_lo, y_hi):
        lin = _read_offsets(reads, plane, n_maps, buf_rows, padded_w, y - row0, pad)
        if residual:
            for x in range(width):
                start = np.int32(image[y, x, image_c]) * base_scale
                for k in range(n_out):
                    flat_acc[x * n_out + k] = start
        else:
            flat_acc[:] = 0
        for b in range(n_branch):
            base_row = row_start[b]
            for r in range(reads.shape[1]):
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
                             width, shift, mask, st0, st1, st2, base_row, n_out, idx, wts)
                _gather_block_row(flat_acc, flat_tables, r0 * n_out, idx, wts, width, n_out)
        for i in range(width * n_out):  # one long loop: LLVM vectorises it
            v = np.rint(real(flat_acc[i]) / den)
            flat_q[i] = np.uint8(min(max(v, zero), top))
        for ky in range(scale):
            drow = out[y * scale + ky]
            for x in range(width):
                for kx in range(scale):
                    drow[x * scale + kx, out_c] = flat_q[x * n_out + ky * scale + kx]


@helper_jit
def _rc_rows(maps, plane, row0, pad, y_lo, y_hi, offsets, lanes, start, combined, levels,
             level_start, level_len, base, lane_map, flat_acc):
    """RC index maps of image rows ``y_lo .. y_hi``: lane l (O j + r: branch j, orientation r)
    into map ``lane_map[l]``.

    For each window offset, one combined row (all the lanes it feeds) is added into an int32
    accumulator per pixel (|sum| <= 225 * 32768 < 2**31); with at most 16 lanes (4 RC branches
    at 4 orientations, 2 at 8) every offset feeds one 16-lane chunk and four offsets share each
    load and store of the accumulator.
    """
    n_planes, n_maps, buf_rows, padded_w = maps.shape
    width = padded_w - 2 * pad
    n_lanes = lane_map.shape[0]
    n_acc = -(-n_lanes // CHUNK) * CHUNK
    n_off = offsets.shape[0]
    n4 = n_off - n_off % 4 if n_acc == CHUNK else 0
    n_c = np.uintp(CHUNK)
    for y in range(y_lo, y_hi):
        i = y - row0
        flat_acc[:] = 0
        for o in range(0, n4, 4):
            # unsigned indices: no negative-index wraparound in the loops below
            sa = maps[plane, 0, i + offsets[o, 0]]
            sb = maps[plane, 0, i + offsets[o + 1, 0]]
            sc = maps[plane, 0, i + offsets[o + 2, 0]]
            sd = maps[plane, 0, i + offsets[o + 3, 0]]
            xa = np.uintp(pad + offsets[o, 1])
            xb = np.uintp(pad + offsets[o + 1, 1])
            xc = np.uintp(pad + offsets[o + 2, 1])
            xd = np.uintp(pad + offsets[o + 3, 1])
            ta = np.uintp(start[o])
            tb = np.uintp(start[o + 1])
            tc = np.uintp(start[o + 2])
            td = np.uintp(start[o + 3])
            for x in range(width):
                ux = np.uintp(x)
                _add_widened4(flat_acc, x * CHUNK, combined, ta + np.uintp(sa[xa + ux]) * n_c,
                              tb + np.uintp(sb[xb + ux]) * n_c, tc + np.uintp(sc[xc + ux]) * n_c,
                              td + np.uintp(sd[xd + ux]) * n_c)
        for o in range(n4, n_off):
            src = maps[plane, 0, i + offsets[o, 0]]
            x0 = np.uintp(pad + offsets[o, 1])
            n_l = np.uintp(lanes[o])
            s0 = np.uintp(start[o])
            for x in range(width):
                t = s0 + np.uintp(src[x0 + np.uintp(x)]) * n_l
                for l0 in range(0, n_l, CHUNK):
                    _add_widened(flat_acc, x * n_acc + l0, combined, t + l0)
        for lane in range(n_lanes):
            lv = levels[level_start[lane]:level_start[lane] + level_len[lane]]
            top = level_len[lane] - 1
            b = base[lane]
            dst = maps[plane, lane_map[lane], i]
            for x in range(width):
                dst[pad + x] = lv[min(max(np.int64(flat_acc[x * n_acc + lane]) - b, 0), top)]
            for x in range(pad):
                dst[x] = dst[pad]
                dst[pad + width + x] = dst[pad + width - 1]


@helper_jit
def _replicate_rows(maps, plane, m_lo, m_hi, row0, need_lo, need_hi, lo, hi):
    """Edge replication of rows: buffer rows of image rows ``need_lo .. need_hi`` outside the
    computed ``lo .. hi`` (past the image's top or bottom) copy the nearest computed row."""
    for yy in range(need_lo, need_hi):
        if lo <= yy < hi:
            continue
        src = lo if yy < lo else hi - 1
        for m in range(m_lo, m_hi):
            dst = maps[plane, m, yy - row0]
            row = maps[plane, m, src - row0]
            for x in range(dst.shape[0]):
                dst[x] = row[x]


# ---- luma-only: bicubic chroma and YCbCr -> RGB over a range of output rows -----------------


@helper_jit
def _chroma_rgb_rows(y, chroma, row_weights, row_index, col_weights, col_index, inverse, offset,
                     out, i_lo, i_hi):
    """Output rows ``i_lo .. i_hi``: bicubic-upscale (Cb, Cr) and convert with the upscaled Y
    (channel 0 of ``y``) to RGB in channels 0..2 of ``out``.

    The same float64 operations in the same order as ``rclut_numba.bicubic.imresize`` (rows
    first, then columns; each sum from zero in tap order) followed by
    ``colour.ycbcr_planes_to_rgb``, so the result equals theirs exactly, without the full-size
    float64 chroma planes in between.
    """
    width = y.shape[1]
    lr_w = chroma.shape[2]
    taps_r = row_weights.shape[1]
    taps_c = col_weights.shape[1]
    i00, i01, i02 = inverse[0, 0], inverse[0, 1], inverse[0, 2]
    i10, i11, i12 = inverse[1, 0], inverse[1, 1], inverse[1, 2]
    i20, i21, i22 = inverse[2, 0], inverse[2, 1], inverse[2, 2]
    o0, o1, o2 = offset[0], offset[1], offset[2]
    tmp = np.empty((2, lr_w), np.float64)
    cb = np.empty(width, np.float64)
    cr = np.empty(width, np.float64)
    rgb = np.empty(3 * width, np.uint8)  # contiguous: the conversion loop vectorises
    for i in range(i_lo, i_hi):
        tmp[:, :] = 0.0
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
            a = np.float64(yi[j, 0]) - o0
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


@parallel_jit
def upscale_chroma_to_rgb(y, chroma, row_weights, row_index, col_weights, col_index, inverse,
                          offset, out):
    """Bicubic-upscale (Cb, Cr) and convert with the upscaled Y to RGB (:func:`_chroma_rgb_rows`).

    y:           (H*s, W*s, 1) uint8, the LUT-upscaled luma
    chroma:      (2, H, W) float64, Cb and Cr at low resolution
    row_weights, row_index: (H*s, P) float64 / int64, the vertical pass (``imresize``'s weights)
    col_weights, col_index: (W*s, Q) float64 / int64, the horizontal pass
    out:         (H*s, W*s, C >= 3) uint8; channels 0..2 are written
    """
    height = y.shape[0]
    n_chunks = min(height, 32)
    for chunk in prange(n_chunks):
        _chroma_rgb_rows(y, chroma, row_weights, row_index, col_weights, col_index, inverse,
                         offset, out, chunk * height // n_chunks, (chunk + 1) * height // n_chunks)


# ---- one stage over a whole image: one launch ---------------------------------------------


@parallel_jit
def rc_stage_maps(maps, pad, offsets, lanes, start, combined, levels, level_start, level_len,
                  base, lane_map):
    """Per pixel, RC branch j and orientation r: ``#{k : sum_p table_j[p, pixel_p] >= thr[k]}``.

    maps:        (planes, M, H + 2*pad, W + 2*pad) uint8; map 0 (the edge-padded stage input,
                 pad >= every window's half width) is read, and for lane l = O j + r the rows
                 ``pad .. pad + H`` of map ``lane_map[l]`` are written (left/right padding too)
    offsets, lanes, start, combined: ``rc_window.combined_tables``
    levels:      the branches' level look-ups (``rc_window.level_table``) end to end; lane l's
                 is ``levels[level_start[l]:level_start[l] + level_len[l]]``, over totals from
                 ``base[l]`` (every lane of a branch has its branch's)
    """
    n_planes, n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    n_acc = -(-lane_map.shape[0] // CHUNK) * CHUNK
    n_rows = n_planes * height
    n_chunks = min(n_rows, 32)
    for chunk in prange(n_chunks):
        flat_acc = np.empty(width * n_acc, np.int32)
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = row // height
            y = row - plane * height
            _rc_rows(maps, plane, -pad, pad, y, y + 1, offsets, lanes, start, combined, levels,
                     level_start, level_len, base, lane_map, flat_acc)


@parallel_jit
def lut_stage_single(maps, pad, reads, n_inputs, row_start, table, interval, levels, bias,
                     divisor, out, out_pad):
    """A stage with one output per pixel: the next stage's input map.

    maps:      (planes, M, H + 2*pad, W + 2*pad) uint8, the stage input and its RC maps
    reads:     (B, O, 4, 3) int64, (map, dy, dx) of input t of branch b under orientation r
    n_inputs:  (B,) int64, 4 (4D LUT, simplex-interpolated) or 1 (1D LUT, exact)
    row_start: (B,) int64, first row of each branch's LUT in ``table``
    table:     (rows,) int8, all branch LUTs stacked
    out:       (planes, M', H + 2*out_pad, W + 2*out_pad) uint8; writes map 0's rows
               ``out_pad .. out_pad + H`` in full (the left and right padding included)
    value:     ``round_half_even(clip(acc / divisor + bias, 0, 255))``, computed as
               ``rint(real(acc + bias * divisor) / divisor)`` in the float type of ``divisor``
               (see :func:`division_type`)
    """
    n_planes, n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    n_rows = n_planes * height
    n_chunks = min(n_rows, 32)  # chunks of rows: scratch arrays are allocated per chunk
    for chunk in prange(n_chunks):
        idx = np.empty((5, width), np.int32)
        wts = np.empty((5, width), np.int32)
        acc = np.empty(width, np.int32)
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = row // height
            y = row - plane * height
            _single_rows(maps, plane, -pad, pad, y, y + 1, reads, n_inputs, row_start, table,
                         interval, levels, bias, divisor, out, -out_pad, out_pad, idx, wts, acc)


@parallel_jit
def lut_stage_block(maps, pad, reads, n_inputs, row_start, tables, interval, levels, divisor,
                    scale, out, c0, residual, image):
    """The last stage: an s x s output block per pixel, ``s * s <= K``.

    maps, pad, reads, n_inputs, row_start: as :func:`lut_stage_single`
    tables:    (O, rows, K) int8, all branch LUTs stacked, K a multiple of 16 (zero columns past
               s * s); ``tables[r, :, j]`` holds the column that lands on block entry j
               (row-major, image frame) under orientation r
    out:       (H * s, W * s, channels) uint8; plane p is written to channel ``c0 + p``
    value:     ``round_half_even(clip(acc / divisor + base, 0, 255))``, as
               ``rint(real(acc + base * divisor) / divisor)`` in the float type of ``divisor``
               (see :func:`division_type`); ``base`` is 0, or with ``residual`` the model input
               pixel of the block, from plane p of ``image`` (H, W, planes) uint8
    """
    n_planes, n_maps, padded_h, padded_w = maps.shape
    height = padded_h - 2 * pad
    width = padded_w - 2 * pad
    n_out = tables.shape[2]
    n_rows = n_planes * height
    n_chunks = min(n_rows, 32)  # chunks of rows: scratch arrays are allocated per chunk
    for chunk in prange(n_chunks):
        idx = np.empty((5, width), np.int32)
        wts = np.empty((5, width), np.int32)
        flat_acc = np.empty(width * n_out, np.int32)
        flat_q = np.empty(width * n_out, np.uint8)
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            plane = row // height
            y = row - plane * height
            _block_rows(maps, plane, -pad, pad, y, y + 1, reads, n_inputs, row_start, tables,
                        interval, levels, divisor, scale, out, c0 + plane, flat_acc, flat_q, idx,
                        wts, residual, image, plane)


# ---- two stages fused per band of rows: one launch per image -------------------------------


@serial_jit
def lut_two_stages(task_lo, task_hi, image, n_bands, interval, levels, scale,
                   pad1, reach1, half1, n_maps1, reads1, n_in1, row_start1, table1, bias1, den1,
                   has_rc1, off1, lanes1, start1, comb1, lev1, lev_start1, lev_len1, base1, map1,
                   pad2, reach2, half2, n_maps2, reads2, n_in2, row_start2, tables2, den2,
                   residual2, has_rc2, off2, lanes2, start2, comb2, lev2, lev_start2, lev_len2,
                   base2, map2,
                   out, c0, chroma, row_weights, row_index, col_weights, col_index,
                   inverse, offset, rgb):
    """Tasks ``task_lo .. task_hi`` of a two-stage model on (H, W, C) ``image`` into channels
    ``c0 .. c0 + C`` of ``out`` (H * s, W * s, channels); unless ``rgb`` is None (luma-only: one
    plane, the Y) each band then turns its rows and the chroma into RGB in ``rgb``
    (:func:`_chroma_rgb_rows`).  With ``rgb`` None numba prunes that branch when it compiles,
    so an RGB model's first run does not compile the colour code.

    Each task is one band of output rows of one plane: it computes, into band-sized buffers,
    the stage-1 rows the band needs (its rows plus ``reach2 + half2`` on each side, clipped to
    the image, then edge-replicated), their RC maps, and the band's output blocks.  The halo
    rows are computed twice (by neighbouring bands); intermediates stay in cache and the whole
    model is one launch of ``C * n_bands`` tasks (task t: plane t // n_bands).  Per stage k:
    ``pad`` the buffers' column padding, ``reach`` the pattern's largest offset, ``half`` the
    largest RC half window, the rest as in :func:`lut_stage_single`, :func:`lut_stage_block`
    and :func:`rc_stage_maps`.
    """
    height, width, _ = image.shape
    n_out = tables2.shape[2]
    h1 = reach1 + half1
    h2 = reach2 + half2
    for task in range(task_lo, task_hi):
        plane = task // n_bands
        band = task - plane * n_bands
        y0 = band * height // n_bands
        y1 = (band + 1) * height // n_bands
        a1 = max(0, y0 - h2)  # stage-1 rows the band needs, inside the image
        b1 = min(height, y1 + h2)
        # stage-1 buffer: image rows a1 - h1 .. b1 + h1 (edge-replicated input)
        row0_1 = a1 - h1
        buf1 = np.empty((1, n_maps1, b1 - a1 + 2 * h1, width + 2 * pad1), np.uint8)
        for i in range(b1 - a1 + 2 * h1):
            yy = min(max(i + row0_1, 0), height - 1)
            dst = buf1[0, 0, i]
            for x in range(width):
                dst[pad1 + x] = image[yy, x, plane]
            for x in range(pad1):
                dst[x] = image[yy, 0, plane]
                dst[pad1 + width + x] = image[yy, width - 1, plane]
        # stage-2 buffer: image rows y0 - h2 .. y1 + h2
        row0_2 = y0 - h2
        buf2 = np.empty((1, n_maps2, y1 - y0 + 2 * h2, width + 2 * pad2), np.uint8)
        idx = np.empty((5, width), np.int32)
        wts = np.empty((5, width), np.int32)
        if has_rc1:
            lo = max(0, a1 - reach1)
            hi = min(height, b1 + reach1)
            acc_rc = np.empty(width * (-(-map1.shape[0] // CHUNK) * CHUNK), np.int32)
            _rc_rows(buf1, 0, row0_1, pad1, lo, hi, off1, lanes1, start1, comb1, lev1,
                     lev_start1, lev_len1, base1, map1, acc_rc)
            _replicate_rows(buf1, 0, np.intp(1), n_maps1, row0_1, a1 - reach1, b1 + reach1, lo, hi)
        acc1 = np.empty(width, np.int32)
        _single_rows(buf1, 0, row0_1, pad1, a1, b1, reads1, n_in1, row_start1, table1, interval,
                     levels, bias1, den1, buf2, row0_2, pad2, idx, wts, acc1)
        # np.intp: literal map bounds would compile a second specialisation of the helper
        _replicate_rows(buf2, 0, np.intp(0), np.intp(1), row0_2, y0 - h2, y1 + h2, a1, b1)
        if has_rc2:
            lo = max(0, y0 - reach2)
            hi = min(height, y1 + reach2)
            acc_rc = np.empty(width * (-(-map2.shape[0] // CHUNK) * CHUNK), np.int32)
            _rc_rows(buf2, 0, row0_2, pad2, lo, hi, off2, lanes2, start2, comb2, lev2,
                     lev_start2, lev_len2, base2, map2, acc_rc)
            _replicate_rows(buf2, 0, np.intp(1), n_maps2, row0_2, y0 - reach2, y1 + reach2, lo, hi)
        flat_acc = np.empty(width * n_out, np.int32)
        flat_q = np.empty(width * n_out, np.uint8)
        _block_rows(buf2, 0, row0_2, pad2, y0, y1, reads2, n_in2, row_start2, tables2, interval,
                    levels, den2, scale, out, c0 + plane, flat_acc, flat_q, idx, wts, residual2,
                    image, plane)
        if rgb is not None:
            _chroma_rgb_rows(out, chroma, row_weights, row_index, col_weights, col_index,
                             inverse, offset, rgb, y0 * scale, y1 * scale)

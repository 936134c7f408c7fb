"""The slow, readable twin of the engine: one pixel at a time, orientations done by rotating
(and transposing) the image.

Written to be read against ``rclut_numba/spec.py``'s description of the arithmetic, not to be
fast.  Python integers and ``fractions.Fraction`` keep every step exact; ``round`` on a Fraction
rounds half to even.
"""
from fractions import Fraction

import numpy as np

from rclut_numba.spec import PATTERN_OFFSETS, ModelSpec, array_key


def pixel(img, y, x):
    """Read with edge replication outside the image."""
    h, w = img.shape
    return int(img[min(max(y, 0), h - 1), min(max(x, 0), w - 1)])


def rc_index_map(img, table, thresholds):
    """Every pixel's RC index: how many thresholds the summed window tables reach."""
    n = int(round(table.shape[0] ** 0.5))
    c = n // 2
    h, w = img.shape
    out = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            total = 0
            for i in range(n):
                for j in range(n):
                    total += int(table[n * i + j, pixel(img, y + i - c, x + j - c)])
            out[y, x] = sum(1 for t in thresholds if total >= int(t))
    return out


def simplex_lookup(lut, values, interval, levels):
    """4-simplex interpolation: weighted sum of 5 LUT rows; the weights sum to ``interval``."""
    lower = [v // interval for v in values]
    frac = [v % interval for v in values]
    order = sorted(range(4), key=lambda d: -frac[d])  # walk dims by decreasing fraction
    f = [frac[d] for d in order]
    weights = [interval - f[0], f[0] - f[1], f[1] - f[2], f[2] - f[3], f[3]]
    vertex = list(lower)
    total = np.zeros(lut.shape[1], dtype=object)
    for step in range(5):
        row = ((vertex[0] * levels + vertex[1]) * levels + vertex[2]) * levels + vertex[3]
        total = total + weights[step] * lut[row].astype(object)
        if step < 4:
            vertex[order[step]] += 1
    return total


def orient(img, o):
    """Orientation o of an image: rotation o, or for o >= 4 rotation o - 4 of its transpose."""
    return np.rot90(img.T if o >= 4 else img, o % 4)


def unorient(img, o):
    """The inverse of :func:`orient`."""
    back = np.rot90(img, -(o % 4))
    return back.T if o >= 4 else back


def branch_output(spec, si, bi, arrays, img, out_scale):
    """Sum over the orientations of one branch, in the image frame: (H*s, W*s) of exact ints."""
    branch = spec.stages[si].branches[bi]
    key = array_key(si, bi)
    lut = arrays[f"{key}_lut"]
    h, w = img.shape
    total = np.zeros((h * out_scale, w * out_scale), dtype=object)
    for r in range(spec.orientations):
        rotated = orient(img, r)
        source = rotated
        if branch.rc:
            source = rc_index_map(rotated, arrays[f"{key}_rc_table"],
                                  arrays[f"{key}_rc_thresholds"])
        rh, rw = rotated.shape
        result = np.zeros((rh * out_scale, rw * out_scale), dtype=object)
        for y in range(rh):
            for x in range(rw):
                values = [pixel(source, y + dy, x + dx)
                          for dy, dx in PATTERN_OFFSETS[branch.pattern]]
                if len(values) == 1:
                    block = spec.interval * lut[values[0]].astype(object)
                else:
                    block = simplex_lookup(lut, values, spec.interval, spec.levels)
                result[y * out_scale:(y + 1) * out_scale, x * out_scale:(x + 1) * out_scale] = \
                    block.reshape(out_scale, out_scale)
        total = total + unorient(result, r)
    return total


def run_reference(spec: ModelSpec, arrays, plane: np.ndarray) -> np.ndarray:
    """One uint8 channel through the whole model."""
    x = plane
    for si, stage in enumerate(spec.stages):
        last = si == len(spec.stages) - 1
        out_scale = spec.scale if last else 1
        n = len(stage.branches)
        acc = sum(branch_output(spec, si, bi, arrays, x, out_scale) for bi in range(n))
        o = spec.orientations
        divisor, bias = (spec.interval * n * o // 4, 0) if last else (spec.interval * o * n, 127)
        # a residual model's last stage adds, to each output pixel, the input pixel it came from
        nearest = np.kron(plane.astype(np.int64), np.ones((out_scale, out_scale), np.int64))
        base = nearest if last and spec.residual else np.zeros(acc.shape, np.int64)

        def output(a, b, divisor=divisor, bias=bias):
            return round(min(max(Fraction(int(a), divisor) + bias + int(b), 0), 255))

        x = np.vectorize(output, otypes=[np.uint8])(acc, base)
    return x


# ---- SR-LUT's own arithmetic (``arithmetic="srlut"``), as its test code computes -------------
def srlut_walk(frac):
    """The order in which SR-LUT's 24-case table walks the dimensions a, b, c, d (0..3): by
    decreasing fraction, except that ``fc > fd > fa > fb`` goes c, a, d, b."""
    fa, fb, fc, fd = frac
    if fc > fd > fa > fb:
        return [2, 0, 3, 1]
    return sorted(range(4), key=lambda d: -frac[d])


def srlut_rotation(lut, rotated, interval, scale):
    """One rotation of SR-LUT: reflect-pad bottom and right by one pixel, interpolate every
    pixel in float64 (vertex by vertex, as SR-LUT does), divide by the interval."""
    levels = 256 // interval + 1
    padded = np.pad(rotated, ((0, 1), (0, 1)), mode="reflect").astype(np.int64)
    h, w = rotated.shape
    result = np.zeros((h * scale, w * scale))
    for y in range(h):
        for x in range(w):
            values = [padded[y, x], padded[y, x + 1], padded[y + 1, x], padded[y + 1, x + 1]]
            frac = [int(v) % interval for v in values]
            vertex = [int(v) // interval for v in values]
            order = srlut_walk(frac)
            f = [frac[d] for d in order]
            weights = [interval - f[0], f[0] - f[1], f[1] - f[2], f[2] - f[3], f[3]]
            block = np.zeros(scale * scale)
            for step in range(5):
                row = ((vertex[0] * levels + vertex[1]) * levels + vertex[2]) * levels + vertex[3]
                block = block + float(weights[step]) * lut[row].astype(np.float64)
                if step < 4:
                    vertex[order[step]] += 1
            result[y * scale:(y + 1) * scale, x * scale:(x + 1) * scale] = \
                block.reshape(scale, scale)
    return result / interval


def run_srlut_reference(lut, interval, scale, plane):
    """One uint8 channel through an SR-LUT LUT (rows, scale**2) as SR-LUT's test code runs it:
    the four rotations summed, / 255, clipped to [0, 1], * 255, one ``numpy.round``."""
    total = sum(np.rot90(srlut_rotation(lut, np.rot90(plane, r), interval, scale), -r)
                for r in range(4))
    return np.round(np.clip(total / 255.0, 0, 1) * 255).astype(np.uint8)

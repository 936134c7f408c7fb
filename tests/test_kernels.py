"""The fast kernels against their readable twins, and their bounds on the pure-Python twin.

``NUMBA_BOUNDSCHECK`` does not check inside ``prange`` and the kernels index flat tables by hand,
so every kernel is also run as plain Python (``kernel.py_func``, its helpers' ``py_func`` and
Python versions of the vector intrinsics that assert their bounds), where numpy raises on a bad
index, and must give the compiled kernel's result.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rclut_numba.bicubic import _contributions
from rclut_numba.bicubic import upscale as bicubic_upscale
from rclut_numba.engine import _NO_COLOUR, LutModel, window_offsets
from rclut_numba.imaging import YCC_INVERSE, YCC_OFFSET
from rclut_numba.kernels import colour, lut_stage, planes
from rclut_numba.kernels.rc_window import combined_tables, level_table
from rclut_numba.spec import Branch, ModelSpec, Stage
from reference import orient, rc_index_map, unorient
from strategies import random_arrays


# ---- the intrinsics' Python twins: the same arithmetic, with their bounds asserted ----------
def _span(a, i, n):
    assert 0 <= i and i + n <= a.shape[0], f"{i}:{i + n} outside 0:{a.shape[0]}"
    return slice(int(i), int(i) + n)


def add_weighted_rows_py(acc, i, table, j0, j1, j2, j3, j4, w0, w1, w2, w3, w4):
    n = lut_stage.CHUNK
    total = np.zeros(n, np.int64)
    for j, w in ((j0, w0), (j1, w1), (j2, w2), (j3, w3), (j4, w4)):
        total += int(w) * table[_span(table, j, n)].astype(np.int64)
    acc[_span(acc, i, n)] += total.astype(np.int32)


def add_widened_py(acc, i, src, j):
    n = lut_stage.CHUNK
    acc[_span(acc, i, n)] += src[_span(src, j, n)].astype(np.int32)


def add_widened4_py(acc, i, src, j0, j1, j2, j3):
    for j in (j0, j1, j2, j3):
        add_widened_py(acc, i, src, j)


def _patch_python_helpers(mp):
    """Make every kernel helper plain Python (inside a ``monkeypatch.context()``)."""
    mp.setattr(lut_stage, "_add_weighted_rows", add_weighted_rows_py)
    mp.setattr(lut_stage, "_add_widened", add_widened_py)
    mp.setattr(lut_stage, "_add_widened4", add_widened4_py)
    for module in (lut_stage, planes, colour):
        for name in dir(module):
            helper = getattr(module, name)
            if name.startswith("_") and hasattr(helper, "py_func"):
                mp.setattr(module, name, helper.py_func)


def _compiled_and_python(monkeypatch, kernel, args, out_index):
    """Run ``kernel`` compiled, then as Python, each on a copy of ``args``; both outputs."""
    def fresh():
        return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)

    args = fresh()
    kernel(*args)
    args_py = fresh()
    with monkeypatch.context() as mp:
        _patch_python_helpers(mp)
        kernel.py_func(*args_py)
    return args[out_index], args_py[out_index]


# ---- specs small enough for Python ----------------------------------------------------------
def _small_specs():
    s, d, y, one = Branch("S"), Branch("D"), Branch("Y"), Branch("1")
    return [
        ModelSpec("mulut-like", 2, (Stage((s, d, y)), Stage((s, one, y))), interval=64),
        ModelSpec("rc-like", 3, (Stage((Branch("S", 3), Branch("S", 5), Branch("1", 1))),
                                 Stage((Branch("1", 3), Branch("D", 5), Branch("Y")))),
                  interval=128, residual=True),
        ModelSpec("x8", 8, (Stage((Branch("S", 7), Branch("Y", 3))),), interval=128,
                  residual=True),  # 64 outputs
    ]


@pytest.mark.parametrize("spec", _small_specs(), ids=lambda s: s.name)
def test_stage_kernels_as_python_equal_compiled(spec, monkeypatch):
    model = LutModel(spec, random_arrays(spec, 1))
    image = np.random.default_rng(2).integers(0, 256, (6, 7, 2), dtype=np.uint8)
    h, w, n = image.shape
    model.fuse = False  # the stage kernels one at a time
    expected = model.upscale_channels(image, tile=None)
    maps, maps_py = _compiled_and_python(monkeypatch, planes.pad_planes, (
        image, np.zeros_like(model._plans[0].new_maps(n, h, w)), model._plans[0].pad), 1)
    assert np.array_equal(maps[:, 0], maps_py[:, 0])  # maps 1.. are the RC kernel's to fill
    for plan, after in zip(model._plans, model._plans[1:] + [None], strict=True):
        p = plan.pad
        if plan.rc is not None:
            got, got_py = _compiled_and_python(
                monkeypatch, lut_stage.rc_stage_maps, (maps, p, *plan.rc), 0)
            assert np.array_equal(got[:, 1:, p:-p], got_py[:, 1:, p:-p])
            maps = got
            maps[:, 1:, :p] = maps[:, 1:, p:p + 1]
            maps[:, 1:, -p:] = maps[:, 1:, -p - 1:-p]
        common = (plan.reads, plan.n_inputs, plan.row_start, plan.tables, plan.interval,
                  plan.levels)
        if after is None:
            got, got_py = _compiled_and_python(monkeypatch, lut_stage.lut_stage_block, (
                maps, p, *common, plan.den, plan.out_scale,
                np.zeros((h * plan.out_scale, w * plan.out_scale, n), np.uint8), 0,
                plan.residual, image), -4)
            assert np.array_equal(got, got_py)
            assert np.array_equal(got, expected)
        else:
            got, got_py = _compiled_and_python(monkeypatch, lut_stage.lut_stage_single, (
                maps, p, *common, plan.bias, plan.den,
                np.zeros_like(after.new_maps(n, h, w)), after.pad), -2)
            assert np.array_equal(got, got_py)
            maps = after.new_maps(n, h, w)
            maps[:] = got
            q = after.pad
            maps[:, 0, :q] = maps[:, 0, q:q + 1]
            maps[:, 0, -q:] = maps[:, 0, -q - 1:-q]


@pytest.mark.parametrize("spec", _small_specs()[:2], ids=lambda s: s.name)
def test_fused_two_stage_kernel_as_python_equals_compiled_and_per_stage(spec, monkeypatch):
    model = LutModel(spec, random_arrays(spec, 3))
    image = np.random.default_rng(4).integers(0, 256, (11, 6, 2), dtype=np.uint8)
    model.fuse = False
    expected = model.upscale_channels(image, tile=None)
    first, last = model._plans
    h, w, n = image.shape
    for bands in (1, 2, 5, 11):
        got, got_py = _compiled_and_python(monkeypatch, lut_stage.lut_two_stages, (
            0, n * bands, image, bands, spec.interval, spec.levels, spec.scale,
            *first.fused_args(), *last.fused_args(),
            np.zeros((h * spec.scale, w * spec.scale, n), np.uint8), 0, *_NO_COLOUR), -10)
        assert np.array_equal(got, expected) and np.array_equal(got_py, expected)


@settings(max_examples=25)
@given(windows=st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, max_size=5),
       orientations=st.sampled_from([4, 8]),
       seed=st.integers(0, 2 ** 32 - 1), h=st.integers(1, 12), w=st.integers(1, 12))
def test_rc_stage_maps_equal_reference_per_branch_and_orientation(windows, orientations, seed, h,
                                                                  w):
    # All the RC branches of a stage (more than 16 lanes of them: two 16-lane chunks) in one
    # pass against the readable per-branch reference run on each orientation of the image.
    windows = sorted(windows, reverse=True)
    n_or = orientations
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w), dtype=np.uint8)
    tables, thresholds = [], []
    for n in windows:
        t = rng.integers(-32768, 32768, (n * n, 256)).astype(np.int16)
        lo, hi = t.min(axis=1).astype(np.int64).sum(), t.max(axis=1).astype(np.int64).sum()
        thresholds.append(np.sort(rng.integers(lo, hi + 1, 255)).astype(np.int32))
        tables.append(t)
    steps = [level_table(t, thr) for t, thr in zip(tables, thresholds, strict=True)]
    pad = windows[0] // 2
    maps = np.zeros((1, 1 + n_or * len(windows), h + 2 * pad, w + 2 * pad), np.uint8)
    maps[0, 0] = np.pad(image, pad, mode="edge")
    lengths = np.array([len(lv) for lv, _ in steps], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    combined = combined_tables(tables, [window_offsets(n, n_or) for n in windows])
    lut_stage.rc_stage_maps(maps, pad, *combined,
                            np.concatenate([lv for lv, _ in steps]), np.repeat(starts, n_or),
                            np.repeat(lengths, n_or),
                            np.repeat(np.array([b for _, b in steps], np.int64), n_or),
                            np.arange(1, 1 + n_or * len(windows), dtype=np.int64))
    for j, (t, thr) in enumerate(zip(tables, thresholds, strict=True)):
        for r in range(n_or):
            expected = unorient(rc_index_map(orient(image, r), t, thr), r)
            assert np.array_equal(maps[0, 1 + n_or * j + r, pad:pad + h, pad:pad + w], expected)


@pytest.mark.parametrize("shape, scale", [((1, 1), 4), ((1, 5), 2), ((17, 23), 4), ((9, 4), 3)])
def test_fused_chroma_kernel_equals_imresize_then_conversion(shape, scale, monkeypatch):
    rng = np.random.default_rng(scale)
    h, w = shape
    chroma = rng.uniform(-10, 265, (h, w, 2))
    y_up = rng.integers(0, 256, (h * scale, w * scale), dtype=np.uint8)
    expected = np.empty((h * scale, w * scale, 3), np.uint8)
    colour.ycbcr_planes_to_rgb(y_up, np.ascontiguousarray(bicubic_upscale(chroma, scale)),
                               YCC_INVERSE, YCC_OFFSET, expected)
    rw, ri = _contributions(h, h * scale, float(scale))
    cw, ci = _contributions(w, w * scale, float(scale))

    args = (y_up[:, :, None], np.ascontiguousarray(np.moveaxis(chroma, -1, 0)), rw, ri, cw, ci,
            YCC_INVERSE, YCC_OFFSET, np.zeros((h * scale, w * scale, 3), np.uint8))
    got, got_py = _compiled_and_python(monkeypatch, colour.upscale_chroma_to_rgb, args, -1)
    assert np.array_equal(got, expected) and np.array_equal(got_py, expected)


@pytest.mark.parametrize("divisor", [1, 3, 48, 192, 1536, 8191, 2 ** 14 - 1, 2 ** 14, 40000])
def test_division_in_the_chosen_float_type_rounds_half_to_even_exactly(divisor):
    # Every stage sum n with |n / divisor| <= 512 (a stage's reach), around every half-integer
    # and at random: rint(real(n) / real(divisor)) is round-half-even of the exact quotient.
    den = lut_stage.division_type(divisor)
    assert isinstance(den, np.float32) == (divisor < 2 ** 14)
    rng = np.random.default_rng(divisor)
    halves = (2 * np.arange(-512, 512) + 1) * divisor  # 2n = (2k + 1) * divisor: ties
    n = np.concatenate([halves // 2 + d for d in (-1, 0, 1)]
                       + [rng.integers(-512 * divisor, 512 * divisor + 1, 200_000)])
    q, r = np.divmod(n, divisor)
    exact = q + ((2 * r > divisor) | ((2 * r == divisor) & (q % 2 == 1)))
    real = type(den)
    assert np.array_equal(np.rint(n.astype(real) / real(divisor)).astype(np.int64), exact)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("real", [np.float32, np.float64])
def test_block_kernel_in_either_float_type(real, residual):
    # Both builds of the division agree (the engine picks float64 only for huge divisors).
    spec = ModelSpec("m", 2, (Stage((Branch("S"), Branch("1"))),), interval=64,
                     residual=residual)
    model = LutModel(spec, random_arrays(spec, 4))
    plan = model._plans[0]
    image = np.random.default_rng(5).integers(0, 256, (9, 10, 1), dtype=np.uint8)
    maps = plan.new_maps(1, 9, 10)
    planes.pad_planes(image, maps, plan.pad)
    out = np.zeros((18, 20, 1), np.uint8)
    lut_stage.lut_stage_block(maps, plan.pad, plan.reads, plan.n_inputs, plan.row_start,
                              plan.tables, plan.interval, plan.levels, real(plan.divisor), 2, out,
                              0, residual, image)
    assert np.array_equal(out[..., 0], model.upscale_plane(image[..., 0], tile=None))

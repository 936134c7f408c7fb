"""The numba engine against its readable twin, and its invariances (threads, tiles, colour)."""
import dataclasses

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rclut_numba.engine import LutModel, block_permutation, rotate_offset
from rclut_numba.kernels.rc_window import level_table
from rclut_numba.spec import mulut_sdy_x2, rclut_paper, srlut
from reference import orient, run_reference
from strategies import images, random_arrays, specs


@given(spec=specs(max_stages=3), seed=st.integers(0, 2 ** 32 - 1), image=images(max_side=14))
def test_engine_equals_reference_small(spec, seed, image):
    arrays = random_arrays(spec, seed)
    model = LutModel(spec, arrays)
    assert np.array_equal(model.upscale(image), run_reference(spec, arrays, image))


@settings(max_examples=6)
@given(seed=st.integers(0, 2 ** 32 - 1), image=images(min_side=20, max_side=40))
def test_engine_equals_reference_larger_images(seed, image):
    spec = rclut_paper(scale=2)
    spec = type(spec)(spec.name, 2, spec.stages, interval=64)
    arrays = random_arrays(spec, seed)
    assert np.array_equal(LutModel(spec, arrays).upscale(image), run_reference(spec, arrays, image))


@settings(max_examples=40)
@given(window=st.sampled_from([1, 3, 5]), seed=st.integers(0, 2 ** 32 - 1),
       spread=st.sampled_from([1, 300, 32767]), offset=st.integers(-2 ** 24, 2 ** 24))
def test_rc_level_table_equals_threshold_count(window, seed, spread, offset):
    # The kernel's direct look-up gives #{k : thr[k] <= total} for every reachable total, with
    # thresholds inside, around or entirely beyond the reachable range.
    rng = np.random.default_rng(seed)
    table = rng.integers(-spread, spread + 1, (window * window, 256)).astype(np.int16)
    thr = np.sort(rng.integers(-2 ** 20, 2 ** 20, 255) // rng.integers(1, 64) + offset // 64)
    thr = thr.astype(np.int32)
    levels, base = level_table(table, thr)
    lo, hi = table.min(axis=1).astype(int).sum(), table.max(axis=1).astype(int).sum()
    totals = np.concatenate([[lo, hi], rng.integers(lo, hi + 1, 500),
                             thr[(thr >= lo) & (thr <= hi)],
                             thr[(thr - 1 >= lo) & (thr - 1 <= hi)] - 1])
    got = levels[np.clip(totals - base, 0, len(levels) - 1)]
    np.testing.assert_array_equal(got, np.searchsorted(thr, totals, side="right"))


@pytest.mark.parametrize("make", [srlut, mulut_sdy_x2, rclut_paper])
def test_named_families_equal_reference(make):
    spec = make()
    spec = type(spec)(spec.name, spec.scale, spec.stages, interval=64)
    arrays = random_arrays(spec, 7)
    image = np.random.default_rng(3).integers(0, 256, (9, 11), dtype=np.uint8)
    assert np.array_equal(LutModel(spec, arrays).upscale(image), run_reference(spec, arrays, image))


@pytest.mark.parametrize("threads", [1, 2])
def test_residual_model_with_zero_last_tables_is_nearest_neighbour(threads):
    # A residual last stage adds the input pixel to the tables' correction: with the last
    # stage's tables all zero the model is nearest-neighbour upscaling, whatever stage 1 and
    # the RC windows compute (the RC-LUT layout, interval 16, every colour channel).
    spec = dataclasses.replace(rclut_paper(), residual=True)
    arrays = random_arrays(spec, 5)
    for name in arrays:
        if name.startswith("s2_") and name.endswith("_lut"):
            arrays[name][:] = 0
    image = np.random.default_rng(6).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    image[:4] = 77  # and a flat patch
    got = LutModel(spec, arrays).upscale(image, threads=threads)
    assert np.array_equal(got, image.repeat(4, 0).repeat(4, 1))
    plain = LutModel(dataclasses.replace(spec, residual=False), arrays).upscale(image)
    assert not plain.any()  # the same tables without the residual: zero everywhere


def test_full_interval_16_equals_reference():
    spec = mulut_sdy_x2()
    arrays = random_arrays(spec, 11)
    image = np.random.default_rng(5).integers(0, 256, (7, 6), dtype=np.uint8)
    image[0, :] = 255  # the top level (value 255, weight 15/16 on the last vertex)
    assert np.array_equal(LutModel(spec, arrays).upscale(image), run_reference(spec, arrays, image))


@settings(max_examples=10)
@given(spec=specs(), seed=st.integers(0, 2 ** 32 - 1), image=images(min_side=8, max_side=60),
       tile=st.integers(1, 17))
def test_tiled_equals_untiled(spec, seed, image, tile):
    model = LutModel(spec, random_arrays(spec, seed))
    assert np.array_equal(model.upscale(image, tile=tile), model.upscale(image, tile=None))


@settings(max_examples=25)
@given(spec=specs(), seed=st.integers(0, 2 ** 32 - 1), image=images(min_side=1, max_side=30),
       threads=st.sampled_from([1, 2]))
def test_fused_stages_equal_one_launch_per_stage(spec, seed, image, threads):
    # Two-stage models run fused in bands of rows (how many depends on the threads); the
    # per-stage launches are the plain layout.
    model = LutModel(spec, random_arrays(spec, seed))
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    fused = model.upscale(image, threads=threads, tile=None)
    model.fuse = False
    assert np.array_equal(fused, model.upscale(image, threads=threads, tile=None))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba sees only one CPU")
def test_one_thread_equals_two_threads():
    spec = rclut_paper()
    spec = type(spec)(spec.name, 4, spec.stages, interval=32)
    model = LutModel(spec, random_arrays(spec, 1))
    image = np.random.default_rng(2).integers(0, 256, (57, 83, 3), dtype=np.uint8)
    assert np.array_equal(model.upscale(image, threads=1), model.upscale(image, threads=2))


def test_rgb_is_per_channel_and_rgba_keeps_alpha_shape():
    spec = srlut()
    spec = type(spec)(spec.name, 3, spec.stages, interval=64)
    model = LutModel(spec, random_arrays(spec, 4))
    rgba = np.random.default_rng(9).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    out = model.upscale(rgba)
    assert out.shape == (30, 36, 4)
    for c in range(3):
        assert np.array_equal(out[..., c], model.upscale(np.ascontiguousarray(rgba[..., c])))
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert np.all(model.upscale(opaque)[..., 3] == 255)  # alpha stays exactly opaque
    assert np.array_equal(model.upscale(rgba[..., :3]), out[..., :3])


def test_luma_only_runs_and_is_close_to_rgb_on_gray_content():
    spec = srlut()
    spec = type(spec)(spec.name, 2, spec.stages, interval=64)
    # an identity-like SR-LUT: every output equals the anchor pixel, so x2 is pixel replication
    # (the 4 rotations sum to the output, so each holds a quarter of the anchor's value)
    levels = spec.levels
    anchor = np.minimum(np.arange(levels) * spec.interval, 255)
    quarter = np.round(np.repeat(anchor, levels ** 3) / 4).astype(np.int8)
    arrays = {"s1_b1_lut": np.repeat(quarter[:, None], 4, axis=1)}
    model = LutModel(spec, arrays)
    gray = np.random.default_rng(1).integers(0, 128, (12, 9), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    full = model.upscale(rgb).astype(int)
    luma = model.upscale(rgb, luma_only=True).astype(int)
    assert luma.shape == full.shape
    assert np.abs(full - luma).mean() < 3.0


@pytest.mark.parametrize("channels", [3, 4])
def test_luma_only_equals_imresize_chroma_and_conversion(channels):
    # luma-only runs the Y and the colour in one fused launch (per band of rows); it must equal
    # the plain pipeline: LUT-upscaled Y, MATLAB-style bicubic chroma, YCbCr -> RGB.
    from rclut_numba.bicubic import upscale as bicubic_upscale
    from rclut_numba.imaging import YCC_INVERSE, YCC_OFFSET, rgb_to_ycbcr
    from rclut_numba.kernels.colour import ycbcr_planes_to_rgb
    spec = rclut_paper(scale=3)
    spec = type(spec)(spec.name, 3, spec.stages, interval=64)
    model = LutModel(spec, random_arrays(spec, 8))
    image = np.random.default_rng(6).integers(0, 256, (21, 17, channels), dtype=np.uint8)
    ycc = rgb_to_ycbcr(image[..., :3])
    y_up = model.upscale(np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8))
    expected = np.empty(y_up.shape + (3,), np.uint8)
    ycbcr_planes_to_rgb(y_up, np.ascontiguousarray(bicubic_upscale(ycc[..., 1:], 3)), YCC_INVERSE,
                        YCC_OFFSET, expected)
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        got = model.upscale(image, luma_only=True, threads=threads)
        assert np.array_equal(got[..., :3], expected)
        assert got.shape[2] == channels
    model.fuse = False
    assert np.array_equal(model.upscale(image, luma_only=True)[..., :3], expected)


def test_orientation_geometry_matches_numpy_rot90_and_transpose():
    img = np.arange(20).reshape(4, 5)
    for r in range(8):
        rot = orient(img, r)
        # the pixel one step down-right of (1, 1) in the oriented frame, found via rotate_offset
        y0, x0 = np.argwhere(img == rot[1, 1])[0]
        dy, dx = rotate_offset(1, 1, r)
        assert img[y0 + dy, x0 + dx] == rot[2, 2]
    s = 3
    block = np.arange(s * s).reshape(s, s)
    perm = block_permutation(s, 8)
    assert np.array_equal(perm[:4], block_permutation(s))
    for r in range(8):
        # a block computed in the oriented frame, placed through the permutation, is restored
        placed = np.empty(s * s, int)
        placed[perm[r]] = orient(block, r).ravel()
        assert np.array_equal(placed.reshape(s, s), block)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((0, 4), np.uint8), "empty"),
    (np.zeros((4, 4), np.float32), "uint8"),
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    ([[1, 2]], "numpy"),
])
def test_bad_images_are_rejected(bad, msg):
    spec = srlut()
    spec = type(spec)(spec.name, 2, spec.stages, interval=128)
    with pytest.raises((ValueError, TypeError), match=msg):
        LutModel(spec, random_arrays(spec, 0)).upscale(bad)


def test_fused_colour_kernel_equals_numpy_conversion():
    from rclut_numba.imaging import YCC_INVERSE, YCC_OFFSET, ycbcr_to_rgb
    from rclut_numba.kernels.colour import ycbcr_planes_to_rgb
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    chroma = rng.uniform(-20, 280, (23, 31, 2))  # out-of-gamut values exercise the clip
    out = np.empty((23, 31, 3), np.uint8)
    ycbcr_planes_to_rgb(y, chroma, YCC_INVERSE, YCC_OFFSET, out)
    expected = ycbcr_to_rgb(np.concatenate([y[..., None].astype(np.float64), chroma], axis=-1))
    assert np.array_equal(out, expected)

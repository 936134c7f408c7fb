"""SR-LUT's LUTs run as SR-LUT's own test code runs them (``arithmetic="srlut"``): the numba
kernel against its readable twin (``reference.run_srlut_reference``), both against SR-LUT's
published outputs, and the ways to choose the arithmetic."""
import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_path
from rclut_numba import load_model, save_bundle
from rclut_numba.engine import LutModel
from rclut_numba.importers import SRLUT_SOURCE
from rclut_numba.kernels import srlut_float
from rclut_numba.spec import ModelSpec, mulut_sdy_x2, srlut
from reference import run_srlut_reference, srlut_walk
from strategies import images, random_arrays

LUT_KEY = "s1_b1_lut"


def srlut_like(scale, interval, imported=True):
    """SR-LUT's layout; ``imported`` marks it as one of SR-LUT's published LUTs."""
    extra = {"imported_from": SRLUT_SOURCE} if imported else {}
    return ModelSpec("SR-LUT", scale, srlut().stages, interval=interval, extra=extra)


# ---- external ground truth: SR-LUT's own x4 outputs ---------------------------------------
def test_srlut_x4_reproduces_srlut_set5_outputs_bit_for_bit():
    lut = shared_path("srlut", "Model_S_x4_4bit_int8.npy")
    lr_dir = shared_path("srlut", "Set5_LR", "X4")
    ref_dir = shared_path("srlut", "reference_outputs", "Set5", "X4")
    model = load_model(lut)
    assert model.arithmetic == "srlut"  # the default for SR-LUT's files
    integer = load_model(lut, arithmetic="integer")
    names = sorted(p.name for p in lr_dir.glob("*.png"))
    assert len(names) == 5
    for name in names:
        lr, ref = iio.imread(lr_dir / name), iio.imread(ref_dir / name)
        assert np.array_equal(model.upscale(lr), ref), name
        # the integer arithmetic is another one: it does not reproduce SR-LUT (test can fail)
        assert not np.array_equal(integer.upscale(lr), ref), name


def test_readable_twin_reproduces_a_srlut_output():
    # the twin is pinned to the outside world too (one channel of one image: it is slow)
    lut = np.load(shared_path("srlut", "Model_S_x4_4bit_int8.npy")).reshape(-1, 16)
    lr = iio.imread(shared_path("srlut", "Set5_LR", "X4", "bird.png"))
    ref = iio.imread(shared_path("srlut", "reference_outputs", "Set5", "X4", "bird.png"))
    assert np.array_equal(run_srlut_reference(lut, 16, 4, lr[..., 1]), ref[..., 1])


# ---- the kernel against its readable twin ---------------------------------------------------
@given(scale=st.integers(1, 4), interval=st.sampled_from([16, 32, 64, 128]),
       seed=st.integers(0, 2 ** 32 - 1), image=images(max_side=12))
def test_kernel_equals_readable_twin(scale, interval, seed, image):
    spec = srlut_like(scale, interval)
    arrays = random_arrays(spec, seed)
    expected = run_srlut_reference(arrays[LUT_KEY], interval, scale, image)
    assert np.array_equal(LutModel(spec, arrays).upscale(image), expected)


@settings(max_examples=10)
@given(seed=st.integers(0, 2 ** 32 - 1), channels=st.sampled_from([3, 4]),
       rows=st.integers(1, 9), cols=st.integers(1, 9))
def test_colour_channels_run_independently(seed, channels, rows, cols):
    spec = srlut_like(2, 64)
    arrays = random_arrays(spec, seed)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (rows, cols, channels), dtype=np.uint8)
    out = LutModel(spec, arrays).upscale(image)
    for c in range(3):
        assert np.array_equal(out[..., c],
                              run_srlut_reference(arrays[LUT_KEY], 64, 2, image[..., c]))


def test_vertex_walk_equals_twin_for_every_fraction():
    # All 16**4 fraction patterns at interval 16: the kernel's walk gives the same non-zero
    # (vertex, weight) pairs as the twin's (among equal fractions the order is free).
    def pairs(frac, order):
        f = [frac[d] for d in order]
        weights = [16 - f[0], f[0] - f[1], f[1] - f[2], f[2] - f[3], f[3]]
        vertex, out = 0, {}
        for step in range(5):
            if weights[step]:
                out[vertex] = weights[step]
            if step < 4:
                vertex |= 1 << order[step]
        return out

    odd = 0
    for code in range(16 ** 4):
        frac = [(code >> (4 * i)) & 15 for i in range(4)]
        kernel = list(srlut_float._vertex_order(*(np.int32(f) for f in frac)))
        assert pairs(frac, kernel) == pairs(frac, srlut_walk(frac)), frac
        odd += any(w < 0 for w in pairs(frac, kernel).values())
    # SR-LUT's one out-of-order case, fc > fd > fa > fb: C(16, 4) fraction sets
    assert odd == 1820


def test_tiles_and_threads_do_not_change_the_output():
    spec = srlut_like(3, 16)
    model = LutModel(spec, random_arrays(spec, 7))
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (53, 41, 3), dtype=np.uint8)
    whole = model.upscale(image, tile=None, threads=1)
    assert np.array_equal(model.upscale(image, tile=16, threads=2), whole)
    assert np.array_equal(model.upscale(image, tile=5), whole)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (2, 3), (6, 7)])
def test_compiled_kernel_equals_plain_python(monkeypatch, shape):
    # NUMBA_BOUNDSCHECK does not reach inside prange: the plain-Python run indexes with numpy
    # bounds checks and must give the compiled result
    spec = srlut_like(3, 32)
    model = LutModel(spec, random_arrays(spec, 3))
    image = np.random.default_rng(2).integers(0, 256, (*shape, 3), dtype=np.uint8)
    compiled = model.upscale(image)
    with monkeypatch.context() as mp:
        for name in ("_vertex_order", "_srlut_row"):
            mp.setattr(srlut_float, name, getattr(srlut_float, name).py_func)
        mp.setattr("rclut_numba.engine.srlut_upscale", srlut_float.srlut_upscale.py_func)
        assert np.array_equal(model.upscale(image), compiled)


def test_flat_images_and_extremes():
    # a LUT of zeros gives black; of +127 everywhere 4 * 127 = 508 > 255: white (clipped)
    spec = srlut_like(2, 16)
    rows = spec.lut_rows(spec.stages[0].branches[0])
    for value, expected in ((0, 0), (127, 255), (-128, 0)):
        arrays = {LUT_KEY: np.full((rows, 4), value, np.int8)}
        out = LutModel(spec, arrays).upscale(np.full((3, 4), 200, np.uint8))
        assert (out == expected).all()


def test_luma_only_runs_the_luma_through_srlut(monkeypatch):
    from rclut_numba import engine
    from rclut_numba.imaging import rgb_to_ycbcr
    spec = srlut_like(2, 16)
    arrays = random_arrays(spec, 4)
    rgb = np.random.default_rng(4).integers(0, 256, (9, 11, 3), dtype=np.uint8)

    def luma_into_red(y_up, *colour):  # the chroma step, reduced to showing the upscaled Y
        colour[-1][..., 0] = y_up[..., 0]

    monkeypatch.setattr(engine, "upscale_chroma_to_rgb", luma_into_red)
    out = LutModel(spec, arrays).upscale(rgb, luma_only=True)
    y = np.clip(np.rint(rgb_to_ycbcr(rgb)[..., 0]), 0, 255).astype(np.uint8)
    assert np.array_equal(out[..., 0], run_srlut_reference(arrays[LUT_KEY], 16, 2, y))


# ---- choosing the arithmetic -------------------------------------------------------------------
def test_default_arithmetic_follows_the_source(tmp_path):
    published = srlut_like(2, 64)
    ours = srlut_like(2, 64, imported=False)
    arrays = random_arrays(published, 0)
    assert LutModel(published, arrays).arithmetic == "srlut"
    assert LutModel(ours, arrays).arithmetic == "integer"
    assert LutModel(published, arrays, arithmetic="integer").arithmetic == "integer"
    assert LutModel(ours, arrays, arithmetic="srlut").arithmetic == "srlut"
    # a bundle converted from SR-LUT's file keeps SR-LUT's arithmetic; load_model can override
    save_bundle(tmp_path / "srlut.npz", published, arrays)
    assert load_model(tmp_path / "srlut.npz").arithmetic == "srlut"
    assert load_model(tmp_path / "srlut.npz", arithmetic="integer").arithmetic == "integer"


def test_the_two_arithmetics_differ_on_random_tables():
    spec = srlut_like(2, 16)
    arrays = random_arrays(spec, 5)
    image = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    a = LutModel(spec, arrays, arithmetic="srlut").upscale(image)
    b = LutModel(spec, arrays, arithmetic="integer").upscale(image)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("spec, arithmetic, message", [
    (mulut_sdy_x2(2), "srlut", "SR-LUT's layout only"),
    (ModelSpec("SR-LUT", 2, srlut().stages, residual=True), "srlut", "SR-LUT's layout only"),
    (ModelSpec("SR-LUT", 2, srlut().stages, orientations=8), "srlut", "four rotations\\), not"),
    (srlut(2), "float", "arithmetic must be one of integer, srlut"),
])
def test_arithmetic_refusals(spec, arithmetic, message):
    with pytest.raises(ValueError, match=message):
        LutModel(spec, random_arrays(spec, 0), arithmetic=arithmetic)


def test_load_model_refuses_srlut_arithmetic_for_other_layouts(tmp_path):
    spec = mulut_sdy_x2(2)
    save_bundle(tmp_path / "mulut.npz", spec, random_arrays(spec, 0))
    with pytest.raises(ValueError, match="arithmetic 'srlut' runs SR-LUT's layout only"):
        load_model(tmp_path / "mulut.npz", arithmetic="srlut")


def test_float_rounding_equals_exact_rounding_for_every_sum():
    # SR-LUT's ``round(clip(sum / 255, 0, 1) * 255)`` (float64) gives round-half-even of the
    # exact sum / interval, clipped, for every reachable sum: its float steps never decide a
    # result, so the two arithmetics differ only by the padding and the vertex walk.
    from fractions import Fraction
    for interval in (16, 32, 64, 128):
        n = np.arange(-4 * 128 * interval, 4 * 128 * interval + 1)
        srlut_way = np.round(np.clip(n / interval / 255.0, 0, 1) * 255)
        exact = [min(max(round(Fraction(int(k), interval)), 0), 255) for k in n]
        assert np.array_equal(srlut_way, exact), interval

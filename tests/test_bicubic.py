"""MATLAB-compatible bicubic: against a slow per-pixel reference, hand-computed weights, and
the standard LR files of ../shared (MATLAB's own output)."""
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rclut_numba.bicubic import _contributions, cubic, downscale, imresize, upscale
from rclut_numba.imaging import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared"


# --- slow, readable reference of MATLAB's imresize (bicubic) -------------------------------
def ref_kernel(t):
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def ref_mirror(i, n):
    """1-based index i reflected into 1..n with the edge pixel repeated (MATLAB 'symmetric')."""
    while i < 1 or i > n:
        i = 1 - i if i < 1 else 2 * n + 1 - i
    return i


# A uint8 pass whose exact value is k + 0.5 may round either way depending on the last bit of
# float summation order (the exact value 108.5 comes out as 108.49999999999999 in tap order).
# The reference flags such ties, and every later value that reads a tied one, as "either way".
TIE_TOLERANCE = 1e-9


def ref_resize_line(line, out_len, scale, round_uint8, line_ties=None):
    """One dimension; returns (values, ties): ties[x] is True when output x sits on a rounding
    tie or reads a pixel that did."""
    n = len(line)
    line_ties = line_ties or [False] * n
    width = 4.0 / scale if scale < 1 else 4.0
    out, ties = [], []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)  # centre of output pixel x in input coordinates
        first = math.floor(u - width / 2)
        total = 0.0
        weight_sum = 0.0
        tied = False
        for j in range(first, first + math.ceil(width) + 2):
            d = u - j
            w = scale * ref_kernel(scale * d) if scale < 1 else ref_kernel(d)
            weight_sum += w
            total += w * line[ref_mirror(j, n) - 1]
            tied = tied or (w != 0 and line_ties[ref_mirror(j, n) - 1])
        value = total / weight_sum
        if round_uint8:
            value = min(max(value, 0.0), 255.0)
            tied = tied or abs(value - math.floor(value) - 0.5) < TIE_TOLERANCE
            value = math.floor(value + 0.5)
        out.append(value)
        ties.append(tied)
    return out, ties


def ref_imresize(img, out_rows, out_cols, scale_rows, scale_cols, with_ties=False):
    img = np.asarray(img)
    is_u8 = img.dtype == np.uint8
    planes = [img] if img.ndim == 2 else [img[:, :, c] for c in range(img.shape[2])]
    results, tie_planes = [], []
    for plane in planes:
        cur = [[float(v) for v in row] for row in plane]
        tie = [[False] * len(row) for row in cur]
        steps = [("rows", scale_rows), ("cols", scale_cols)]
        steps.sort(key=lambda s: s[1])  # smallest scale first, rows first on ties
        for which, s in steps:
            if which == "rows":
                cols = [ref_resize_line([r[c] for r in cur], out_rows, s, is_u8,
                                        [t[c] for t in tie])
                        for c in range(len(cur[0]))]
                cur = [[col[0][r] for col in cols] for r in range(out_rows)]
                tie = [[col[1][r] for col in cols] for r in range(out_rows)]
            else:
                lines = [ref_resize_line(row, out_cols, s, is_u8, t)
                         for row, t in zip(cur, tie, strict=True)]
                cur = [line[0] for line in lines]
                tie = [line[1] for line in lines]
        results.append(np.array(cur))
        tie_planes.append(np.array(tie, dtype=bool))
    out = results[0] if img.ndim == 2 else np.stack(results, axis=2)
    ties = tie_planes[0] if img.ndim == 2 else np.stack(tie_planes, axis=2)
    out = out.astype(np.uint8) if is_u8 else out
    return (out, ties) if with_ties else out


def assert_equal_except_ties(out, img, out_rows, out_cols, scale_rows, scale_cols):
    """Bit-equal wherever no rounding tie is involved; within 2 levels where one is (a tie is
    off by one at most, and a later pass's weights sum in absolute value to less than 1.5)."""
    ref, ties = ref_imresize(img, out_rows, out_cols, scale_rows, scale_cols, with_ties=True)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out[~ties], ref[~ties])
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    assert diff[ties].max(initial=0) <= 2


# --- tests ----------------------------------------------------------------------------------
def test_kernel_values():
    assert cubic(0.0) == 1.0
    assert cubic(1.0) == 0.0 and cubic(2.0) == 0.0 and cubic(2.5) == 0.0
    assert cubic(0.5) == pytest.approx(0.5625)
    assert cubic(1.5) == pytest.approx(-0.0625)


def test_upscale_x2_weights_by_hand():
    # Output pixel 1 of a x2 upscale sits at u = 0.75: taps at distances 1.75, 0.75, 0.25, 1.25
    # from input pixels -1, 0, 1, 2 (1-based), mirrored ([.. 2 1 | 1 2 ..]) to 2, 1, 1, 2.
    w, idx = _contributions(5, 10, 2.0)
    np.testing.assert_allclose(w[0], [-0.0234375, 0.2265625, 0.8671875, -0.0703125], atol=1e-15)
    assert list(idx[0]) == [1, 0, 0, 1]  # 0-based
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_downscale_x4_weights_symmetric():
    # Output pixel x covers input 4x-3..4x; the antialiased kernel is symmetric about 4x - 1.5.
    w, idx = _contributions(64, 16, 0.25)
    assert w.shape[1] == 16
    row = w[8]
    np.testing.assert_allclose(row, row[::-1], atol=1e-15)
    assert list(idx[8]) == list(range(8 * 4 - 6, 8 * 4 + 10))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    channels=st.sampled_from([0, 3]),
    scale=st.sampled_from([0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_reference_uint8(rows, cols, channels, scale, seed):
    rng = np.random.default_rng(seed)
    shape = (rows, cols) if channels == 0 else (rows, cols, channels)
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    out = imresize(img, scale)
    out_rows, out_cols = math.ceil(rows * scale), math.ceil(cols * scale)
    assert out.dtype == np.uint8 and out.shape[:2] == (out_rows, out_cols)
    assert_equal_except_ties(out, img, out_rows, out_cols, scale, scale)


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(2, 8),
    cols=st.integers(2, 8),
    out_rows=st.integers(1, 12),
    out_cols=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
@example(rows=6, cols=2, out_rows=4, out_cols=2, seed=1_049_762_032)  # exact tie at 108.5
def test_matches_reference_output_shape(rows, cols, out_rows, out_cols, seed):
    # Unequal scales: the dimension with the smaller scale goes first, and uint8 rounds in between.
    img = np.random.default_rng(seed).integers(0, 256, size=(rows, cols), dtype=np.uint8)
    out = imresize(img, output_shape=(out_rows, out_cols))
    assert_equal_except_ties(out, img, out_rows, out_cols, out_rows / rows, out_cols / cols)


def test_matches_reference_float():
    img = np.random.default_rng(1).random((7, 5)) * 255
    out = imresize(img, 0.5)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref_imresize(img, 4, 3, 0.5, 0.5), rtol=0, atol=1e-9)
    out = imresize(img.astype(np.float32), 3)
    assert out.dtype == np.float64
    ref = ref_imresize(img.astype(np.float32).astype(np.float64), 21, 15, 3, 3)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)


def test_uint8_rounds_each_pass():
    # If the intermediate pass were kept in float, some pixels would differ: MATLAB rounds both.
    img = np.random.default_rng(2).integers(0, 256, size=(32, 32), dtype=np.uint8)
    one_pass_float = imresize(imresize(img.astype(np.float64), (0.25, 1.0)), (1.0, 0.25))
    float_result = np.floor(np.clip(one_pass_float, 0, 255) + 0.5).astype(np.uint8)
    assert (imresize(img, 0.25) != float_result).any()


@pytest.mark.parametrize("scale", [0.25, 0.5, 2, 4])
def test_constant_image_stays_constant(scale):
    img = np.full((12, 10, 3), 77, dtype=np.uint8)
    out = imresize(img, scale)
    assert (out == 77).all()
    outf = imresize(np.full((12, 10), 0.3), scale)
    np.testing.assert_allclose(outf, 0.3, atol=1e-12)


def test_channels_are_independent():
    img = np.random.default_rng(3).integers(0, 256, size=(9, 11, 4), dtype=np.uint8)
    out = upscale(img, 4)
    for c in range(4):
        np.testing.assert_array_equal(out[:, :, c], upscale(img[:, :, c], 4))


def test_shapes():
    img = np.zeros((10, 13), dtype=np.uint8)
    assert imresize(img, 0.25).shape == (3, 4)  # MATLAB: ceil
    assert downscale(img, 4).shape == (2, 3)  # ours: floor, same geometry
    assert upscale(img, 4).shape == (40, 52)
    assert imresize(img, output_shape=(5, 7)).shape == (5, 7)
    # downscale of a multiple-of-factor image is exactly imresize(., 1/factor)
    big = np.random.default_rng(4).integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(downscale(big, 4), imresize(big, 0.25))


def test_bad_arguments():
    img = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img.astype(np.int32), 2)
    with pytest.raises(ValueError):
        imresize(np.zeros((4,), dtype=np.uint8), 2)
    with pytest.raises(ValueError):
        imresize(img, -1)
    with pytest.raises(ValueError):
        downscale(img, 8)
    with pytest.raises(ValueError):
        upscale(img, 1.5)


# --- acceptance against MATLAB's own LR images ---------------------------------------------
def test_downscale_matches_matlab_lr_files():
    bench = SHARED / "data" / "benchmark"
    if not bench.is_dir():
        pytest.skip(f"{bench} not found: ../shared (test data) is not beside this checkout")
    total = exact = within1 = 0
    for name in ("Set5", "Set14"):
        for hr_path in sorted((bench / name / "HR").glob("*.png")):
            hr = read_image(hr_path)
            lr = read_image(bench / name / "LR_bicubic" / "X4" / hr_path.name)
            ours = downscale(hr, 4)
            assert ours.shape == lr.shape, hr_path.name
            diff = np.abs(ours.astype(np.int16) - lr.astype(np.int16))
            total += diff.size
            exact += int((diff == 0).sum())
            within1 += int((diff <= 1).sum())
    print(f"LR match: exact {exact / total:.6f}, within 1 {within1 / total:.6f} "
          f"of {total} samples")
    assert within1 / total >= 0.999


@pytest.mark.parametrize("factor", [2, 3])
def test_imresize_matches_srlut_lr_files(factor):
    # SR-LUT's own x2 / x3 inputs: imresize(hr, 1/factor) of the uncropped HR (x3: ceil-sized,
    # e.g. baby 512 -> 171). Ours gives every byte; with HR sizes that are multiples of the
    # factor (all of Set5 at x2) the evaluation's downscale of the cropped HR is the same image.
    lr_dir = SHARED / "srlut" / "Set5_LR" / f"X{factor}"
    if not lr_dir.is_dir():
        pytest.skip(f"{lr_dir} not found: ../shared (test data) is not beside this checkout")
    names = sorted(p.name for p in lr_dir.glob("*.png"))
    assert len(names) == 5
    for name in names:
        hr = read_image(SHARED / "data" / "benchmark" / "Set5" / "HR" / name)
        theirs = read_image(lr_dir / name)
        assert np.array_equal(imresize(hr, 1.0 / factor), theirs), name
        if hr.shape[0] % factor == 0 and hr.shape[1] % factor == 0:
            assert np.array_equal(downscale(hr, factor), theirs), name

"""PSNR / SSIM on Y per the SR scoring protocol, checked against values computed by hand."""
import math

import numpy as np
import pytest

from rclut_numba.metrics import gaussian_window, psnr, rgb_to_y, score, ssim


def test_rgb_to_y_known_values():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64 and y.shape == (1, 5)
    np.testing.assert_allclose(y[0], [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)


def test_rgb_to_y_gray_passthrough_and_alpha_ignored():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    y = rgb_to_y(g)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, g)
    rgba = np.dstack([np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2), np.uint8)])
    np.testing.assert_allclose(rgb_to_y(rgba), 235)


def test_psnr_by_hand():
    hr = np.zeros((8, 8), np.uint8)
    sr = hr.copy()
    sr[3, 4] = 10  # inside the shaved region: 36 pixels remain, one off by 10
    expected = 10 * math.log10(255**2 / (100 / 36))
    assert psnr(sr, hr, shave=1) == pytest.approx(expected, abs=1e-12)
    sr2 = hr.copy()
    sr2[0, 5] = 200  # on the border: shaved away
    assert psnr(sr2, hr, shave=1) == math.inf
    assert psnr(sr2, hr, shave=0) < 100


def test_psnr_rgb_uses_y():
    hr = np.random.default_rng(0).integers(0, 250, size=(10, 12, 3), dtype=np.uint8)
    sr = hr + 1  # every channel +1: Y moves by 219/255
    assert psnr(sr, hr, 2) == pytest.approx(20 * math.log10(255 / (219 / 255)), abs=1e-9)
    # scored on Y only: a pure chroma change that keeps Y is invisible
    a = np.full((10, 12, 3), 100.0)
    b = a.copy()
    b[..., 0] += 24.966  # R up, B down in the ratio of their Y weights
    b[..., 2] -= 65.481
    assert psnr(b, a, 2) > 200


def test_ssim_identical_is_one():
    img = np.random.default_rng(1).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    assert ssim(img, img.copy(), 4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_by_hand():
    # Constant planes: zero variance, so SSIM = (2xy + C1) / (x^2 + y^2 + C1) everywhere.
    a = np.full((20, 20), 100, np.uint8)
    b = np.full((20, 20), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert ssim(a, b, 0) == pytest.approx(expected, abs=1e-12)


def test_ssim_symmetric_below_one():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(24, 24), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, size=a.shape), 0, 255).astype(np.uint8)
    s = ssim(a, b, 1)
    assert 0 < s < 1
    assert ssim(b, a, 1) == pytest.approx(s, abs=1e-12)


def test_gaussian_window():
    g = gaussian_window(11, 1.5)
    assert g.size == 11 and g.sum() == pytest.approx(1.0)
    assert g[5] == g.max()
    assert g[4] / g[5] == pytest.approx(math.exp(-1 / (2 * 1.5**2)))


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(40, 37), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, size=a.shape), 0, 255).astype(np.uint8)
    # skimage averages over the same valid region (it crops (win - 1) / 2 after filtering).
    ref = metrics.structural_similarity(
        a.astype(np.float64), b.astype(np.float64), data_range=255,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )
    assert ssim(a, b, 0) == pytest.approx(ref, abs=1e-9)


def test_gray_hr_against_rgb_sr():
    # Set14 'bridge': the HR is gray. An SR that replicated the gray value scores as the gray.
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
    sr_rgb = np.repeat(hr[:, :, None], 3, axis=2)
    p, s = score(sr_rgb, hr, 4)
    assert p == math.inf and s == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(hr.astype(int) + 5, 0, 255).astype(np.uint8)
    assert score(np.repeat(noisy[:, :, None], 3, axis=2), hr, 4) == pytest.approx(
        score(noisy, hr, 4), abs=1e-9)


def test_errors():
    with pytest.raises(ValueError, match="differ"):
        psnr(np.zeros((8, 8)), np.zeros((8, 9)), 0)
    with pytest.raises(ValueError):
        ssim(np.zeros((12, 12)), np.zeros((12, 12)), 2)  # 8x8 left: smaller than the window
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4)), np.zeros((4, 4)), 2)

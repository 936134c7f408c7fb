"""PSNR and SSIM on the Y channel, the scoring protocol of published SR tables.

Protocol (see ``../shared/README.md``): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
in float64 (not rounded), ``shave`` pixels removed at every border, PSNR with peak 255, and
SSIM with an 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2, C2 = (0.03*255)^2,
averaged over the positions where the whole window fits ("valid" region), as the common
Python SR evaluation (``cv2.filter2D(...)[5:-5, 5:-5]``) and MATLAB's ``ssim_index`` do.

:func:`score` computes SSIM on the whole Y plane (no shave), like the evaluation code that
produced the published SR-LUT / MuLUT / RC-LUT tables: with it the published MuLUT LUTs give
Set5 SSIM 0.8656 (MuLUT reports 0.8653-0.8655); shaving 4 pixels first would give 0.8662.

Gray images are scored on their single channel. When one image is gray and the other RGB,
the RGB one is reduced to full-range BT.601 luma ``(Y - 16) * 255 / 219`` (= 0.299 R +
0.587 G + 0.114 B), which equals the gray value exactly when R = G = B, so a gray image
that was replicated into three channels scores as the gray image itself.
"""
from __future__ import annotations

import math

import numpy as np

from .imaging import YCC_MATRIX, YCC_OFFSET

__all__ = ["rgb_to_y", "psnr", "ssim", "score", "gaussian_window"]

_Y_WEIGHTS = YCC_MATRIX[0] / 255.0  # the Y row of the BT.601 conversion


def rgb_to_y(img) -> np.ndarray:
    """Y (16..235 for 0..255 input) of an RGB image as float64 HxW; gray passes through as
    float64. An alpha channel (HxWx4) is ignored."""
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        return a[:, :, 0].astype(np.float64)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return a[:, :, :3].astype(np.float64) @ _Y_WEIGHTS + YCC_OFFSET[0]
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {a.shape}")


def _is_gray(a: np.ndarray) -> bool:
    return a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1)


def _luma_full_range(a: np.ndarray) -> np.ndarray:
    rgb = a[:, :, :3]
    if (rgb == rgb[:, :, :1]).all():
        return rgb[:, :, 0].astype(np.float64)  # exact for gray stored as RGB
    return (rgb_to_y(a) - 16.0) * (255.0 / 219.0)


def _score_planes(sr, hr, shave: int) -> tuple[np.ndarray, np.ndarray]:
    """The two float64 planes that are compared, shaved."""
    sr = np.asarray(sr)
    hr = np.asarray(hr)
    if sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f"image sizes differ: SR {sr.shape[:2]} vs HR {hr.shape[:2]}")
    if _is_gray(sr) == _is_gray(hr):
        a, b = rgb_to_y(sr), rgb_to_y(hr)
    else:
        a = rgb_to_y(sr) if _is_gray(sr) else _luma_full_range(sr)
        b = rgb_to_y(hr) if _is_gray(hr) else _luma_full_range(hr)
    shave = int(shave)
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave:
        if 2 * shave >= min(a.shape):
            raise ValueError(f"image {a.shape} is too small to shave {shave} pixels per border")
        a = a[shave:-shave, shave:-shave]
        b = b[shave:-shave, shave:-shave]
    return a, b


def psnr(sr, hr, shave: int) -> float:
    """PSNR in dB (peak 255) on Y after removing ``shave`` border pixels; inf if identical."""
    a, b = _score_planes(sr, hr, shave)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D Gaussian taps summing to one (the separable factor of the 2-D SSIM window)."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with the symmetric 1-D taps ``g``."""
    n = g.size
    rows = x.shape[0] - n + 1
    tmp = g[0] * x[0:rows]
    for k in range(1, n):
        tmp = tmp + g[k] * x[k : k + rows]
    cols = x.shape[1] - n + 1
    out = g[0] * tmp[:, 0:cols]
    for k in range(1, n):
        out = out + g[k] * tmp[:, k : k + cols]
    return out


def ssim(sr, hr, shave: int) -> float:
    """Mean SSIM on Y after removing ``shave`` border pixels (Gaussian 11x11, sigma 1.5)."""
    a, b = _score_planes(sr, hr, shave)
    g = gaussian_window(11, 1.5)
    if min(a.shape) < g.size:
        raise ValueError(f"image {a.shape} (after shaving) is smaller than the 11x11 SSIM window")
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    # Population (biased) local variances: E[x^2] - E[x]^2 under the Gaussian weights.
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def score(sr_uint8, hr_uint8, shave: int) -> tuple[float, float]:
    """``(psnr, ssim)`` of an upscaled image against its ground truth: PSNR shaved by
    ``shave``, SSIM on the whole plane, as the published LUT-SR tables were scored."""
    return psnr(sr_uint8, hr_uint8, shave), ssim(sr_uint8, hr_uint8, 0)

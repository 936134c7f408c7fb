"""Benchmark evaluation: (LR, HR) pairs from a dataset folder, scored with the SR protocol.

A dataset folder holds ``HR/`` and optionally ``LR_bicubic/X{scale}/`` (the layout of the
standard benchmark packages). HR images are cropped to a multiple of ``scale`` (top-left kept,
the usual ``modcrop``); the LR image is read from ``LR_bicubic/X{scale}/`` when a file with the
same stem (or the ``{stem}x{scale}`` naming of DIV2K-style packages) exists, otherwise it is
made from the cropped HR with the MATLAB-compatible :func:`rclut_numba.bicubic.downscale`.
Used by the engine CLI and by the training CLI (with a network-based ``upscale_fn``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .bicubic import downscale
from .imaging import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image
from .metrics import score

__all__ = ["DatasetError", "IMAGE_EXTENSIONS", "PSNR_CAP", "dataset_pairs", "evaluate"]

# An image reproduced exactly has an infinite PSNR; each image's PSNR is capped here so that a
# mean over a set stays finite and meaningful (one bit off in a 512 x 512 image is ~102 dB).
PSNR_CAP = 100.0


class DatasetError(ValueError):
    """A dataset folder that cannot be evaluated; the one-line message says why."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def _find_lr(lr_dir: Path, stem: str, scale: int) -> Path | None:
    if not lr_dir.is_dir():
        return None
    for name in (stem, f"{stem}x{scale}"):
        for ext in IMAGE_EXTENSIONS:
            for candidate in (lr_dir / f"{name}{ext}", lr_dir / f"{name}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def _hr_files(root: Path) -> list[Path]:
    hr_dir = root / "HR"
    if not hr_dir.is_dir():
        raise DatasetError(f"{root}: no HR/ folder (expected {hr_dir})")
    hr_files = _images_in(hr_dir)
    if not hr_files:
        raise DatasetError(f"{hr_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return hr_files


def dataset_pairs(dataset_dir, scale: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
                  ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(name, lr_uint8, hr_uint8)`` for every HR image, sorted by file name.

    ``name`` is the HR file's stem. Raises :class:`DatasetError` for a missing or empty
    ``HR/`` folder and for an LR file whose size or channel count does not match the
    cropped HR image; unreadable images raise :class:`rclut_numba.imaging.ImageError`.
    The folder checks happen on the first ``next()``.
    """
    scale = int(scale)
    if scale < 1:
        raise DatasetError(f"scale must be a positive integer, got {scale}")
    root = Path(dataset_dir)
    hr_files = _hr_files(root)
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    for hr_path in hr_files:
        hr = read_image(hr_path, max_pixels=max_pixels)
        rows, cols = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        if rows == 0 or cols == 0:
            raise DatasetError(
                f"{hr_path}: image {hr.shape[:2]} is smaller than the scale {scale}"
            )
        hr = np.ascontiguousarray(hr[:rows, :cols])
        lr_path = _find_lr(lr_dir, hr_path.stem, scale)
        if lr_path is None:
            lr = downscale(hr, scale)
        else:
            lr = read_image(lr_path, max_pixels=max_pixels)
            want = (rows // scale, cols // scale)
            if lr.shape[:2] != want:
                raise DatasetError(
                    f"{lr_path}: LR size {lr.shape[0]}x{lr.shape[1]} does not match HR "
                    f"{rows}x{cols} / {scale} = {want[0]}x{want[1]}"
                )
            if lr.shape[2:] != hr.shape[2:]:
                raise DatasetError(
                    f"{lr_path}: LR has {_channels(lr)} channel(s) but HR {hr_path.name} has "
                    f"{_channels(hr)}"
                )
        yield hr_path.stem, lr, hr


def _channels(a: np.ndarray) -> int:
    return 1 if a.ndim == 2 else a.shape[2]


def evaluate(
    upscale_fn: Callable[[np.ndarray], np.ndarray],
    dataset_dir,
    scale: int,
    out: Callable[[str], object] = print,
    progress: Callable[[int, int, str], object] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict:
    """Upscale every LR image of a dataset with ``upscale_fn`` and score it against its HR.

    Prints (through ``out``) one line per image, ``name  PSNR xx.xxxx  SSIM 0.xxxx``, then
    ``mean PSNR xx.xxxx SSIM 0.xxxx``. Scoring: Y channel, ``scale`` border pixels shaved;
    each image's PSNR is capped at ``PSNR_CAP`` (100 dB), so an exact reproduction counts as
    100 dB and the mean stays finite. ``progress(done, total, name)`` is called before each
    image (and once with ``done == total`` at the end). Returns
    ``{"mean_psnr", "mean_ssim", "rows"}``, rows being dicts ``name, psnr, ssim``.
    """
    rows = []
    total = len(_hr_files(Path(dataset_dir))) if progress else 0
    for name, lr, hr in dataset_pairs(dataset_dir, scale, max_pixels=max_pixels):
        if progress:
            progress(len(rows), total, name)
        sr = np.asarray(upscale_fn(lr))
        if sr.shape[:2] != hr.shape[:2]:
            raise DatasetError(
                f"{name}: upscale_fn returned {sr.shape[0]}x{sr.shape[1]} for an LR of "
                f"{lr.shape[0]}x{lr.shape[1]}; expected {hr.shape[0]}x{hr.shape[1]}"
            )
        p, s = score(sr, hr, shave=scale)
        p = min(p, PSNR_CAP)
        rows.append({"name": name, "psnr": p, "ssim": s})
        out(f"{name}  PSNR {p:.4f}  SSIM {s:.4f}")
    if progress:
        progress(total, total, "")
    mean_psnr = float(np.mean([r["psnr"] for r in rows]))
    mean_ssim = float(np.mean([r["ssim"] for r in rows]))
    out(f"mean PSNR {mean_psnr:.4f} SSIM {mean_ssim:.4f}")
    return {"mean_psnr": mean_psnr, "mean_ssim": mean_ssim, "rows": rows}


def tables_psnr(spec, arrays: dict[str, np.ndarray], dataset_dir) -> float:
    """Mean PSNR of the numba engine on a bundle's tables (``spec``, ``arrays``) over a dataset,
    scored as :func:`evaluate` scores, printing nothing."""
    from .engine import LutModel  # here: evaluation itself runs any upscale function

    model = LutModel(spec, arrays)
    return evaluate(model.upscale, dataset_dir, spec.scale, out=lambda _s: None)["mean_psnr"]

"""``rclut-train pack``: the training images as one file a run can carry to another machine.

A pack is a compressed ``.npz`` of ``P x P`` LR patches and their ``sP x sP`` HR patches (one
colour channel each, uint8), read by :func:`training.data.load_pack` wherever a training
folder is accepted (``--data pack.npz``, ``[pipeline] data = ["pack.npz"]``).

Sampling: patches are drawn as the training draws crops from folders: an image with
probability proportional to its number of patch positions, then a channel and a position
uniformly (so every patch position of the set is equally likely).  Their LR is cut from the LR
of the whole image (``rclut_numba.bicubic.downscale`` of the modcropped HR), so a pack's
patches hold exactly the pixels a folder run would see there.  Patches are added in the order
drawn until the compressed file reaches ``max_bytes`` (48 MB by default: about 700 patches of
64 px LR at x4 from natural photos); a set too small to fill it gives about two patches per
patch-sized area of every image (``COVERAGE``), as more would repeat pixels.
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rclut_numba.bicubic import downscale
from rclut_numba.fileio import atomic_write
from rclut_numba.imaging import ImageError, read_image

from .data import (
    PACK_FORMAT,
    PACK_VERSION,
    DataError,
    channel_planes,
    find_images,
    modcrop,
)

__all__ = ["DEFAULT_MAX_BYTES", "write_pack"]

DEFAULT_MAX_BYTES = 48_000_000
COVERAGE = 2.0          # at most this many patches per patch-sized area of the whole set
_ESTIMATE_PATCHES = 64  # patches compressed to estimate the bytes of one
_MAX_TRIES = 6


def _draw_origins(shapes, patch: int, count: int, seed: int) -> np.ndarray:
    """``count`` patch origins ``(image, channel, y, x)`` (LR pixels), drawn as
    ``SRDataset.batch`` draws crops; the first k of ``count`` are the draw of k (one row of
    uniforms per patch), so a smaller pack is a prefix of a larger one."""
    pos = np.array([(h - patch + 1) * (w - patch + 1) for _c, h, w in shapes], np.float64)
    cdf = np.cumsum(pos / pos.sum())
    u = np.random.default_rng([seed, 0x9ACC]).random((count, 4))
    img = np.minimum(np.searchsorted(cdf, u[:, 0], side="right"), len(shapes) - 1)
    origins = np.empty((count, 4), np.int64)
    for i, k in enumerate(img):
        c, h, w = shapes[k]
        origins[i] = (k, min(int(u[i, 1] * c), c - 1), min(int(u[i, 2] * (h - patch + 1)),
                      h - patch), min(int(u[i, 3] * (w - patch + 1)), w - patch))
    return origins


def _cut(hr_planes, lr_planes, origins, patch: int, scale: int):
    n, s, p = len(origins), scale, patch
    hr = np.empty((n, s * p, s * p), np.uint8)
    lr = np.empty((n, p, p), np.uint8)
    for i, (k, c, y, x) in enumerate(origins):
        lr[i] = lr_planes[k][c, y:y + p, x:x + p]
        hr[i] = hr_planes[k][c, s * y:s * (y + p), s * x:s * (x + p)]
    return hr, lr


def _save(out: Path, hr, lr, origins, sources, scale: int) -> int:
    with atomic_write(out) as f:
        np.savez_compressed(f, format=np.array(PACK_FORMAT), version=np.array(PACK_VERSION),
                            scale=np.array(scale), hr=hr, lr=lr,
                            origin=origins.astype(np.int32), sources=np.array(sources))
    return out.stat().st_size


def write_pack(dirs, out, *, scale: int = 4, patch: int = 64,
               max_bytes: int = DEFAULT_MAX_BYTES, seed: int = 0, force: bool = False,
               log: Callable[[str], object] = print) -> dict:
    """Write the pack ``out`` from the images under ``dirs``; returns what it holds
    (``patches``, ``bytes``, ``images``, ``seconds``)."""
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise DataError(f"a training pack is a .npz file, got {out}")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; use --force to overwrite")
    if scale < 1 or patch < 1 or max_bytes < 1:
        raise DataError(f"pack needs scale, patch and size >= 1, got {scale}, {patch}, "
                        f"{max_bytes}")
    t0 = time.time()
    roots = [Path(d).resolve() for d in dirs]
    hr_planes, lr_planes, shapes, sources, skipped = [], [], [], [], 0
    for path in find_images(dirs):
        try:
            hr = modcrop(read_image(path), scale)
        except ImageError as e:
            raise DataError(str(e)) from None
        if min(hr.shape[:2]) < scale * patch:
            skipped += 1
            continue
        lr = channel_planes(downscale(hr, scale))
        hr_planes.append(channel_planes(hr))
        lr_planes.append(lr)
        shapes.append(lr.shape)
        resolved = path.resolve()
        root = next((r for r in roots if resolved.is_relative_to(r)), resolved.parent)
        sources.append(str(Path(root.name) / resolved.relative_to(root)))
    if not shapes:
        raise DataError(f"no training image is at least {scale * patch} pixels on each side")
    area = sum(c * h * w for c, h, w in shapes)
    most = max(1, int(COVERAGE * area / (patch * patch)))
    probe = _draw_origins(shapes, patch, min(most, _ESTIMATE_PATCHES), seed)
    hr, lr = _cut(hr_planes, lr_planes, probe, patch, scale)
    per_patch = (len(zlib.compress(hr.tobytes())) + len(zlib.compress(lr.tobytes()))) / len(hr)
    count = max(1, min(most, int(0.97 * max_bytes / per_patch)))
    for _ in range(_MAX_TRIES):
        origins = _draw_origins(shapes, patch, count, seed)  # a prefix of the same sequence
        hr, lr = _cut(hr_planes, lr_planes, origins, patch, scale)
        size = _save(out, hr, lr, origins, sources, scale)
        if size <= max_bytes:
            break
        count = int(count * 0.98 * max_bytes / size)
        if count < 1:
            break
    if size > max_bytes:
        out.unlink()
        raise DataError(f"not even one {patch}px patch fits in {max_bytes} bytes")
    log(f"wrote {out}: {count} patches of {patch}px LR / {scale * patch}px HR (x{scale}) from "
        f"{len(shapes)} images ({skipped} smaller than a patch skipped), {size / 1e6:.1f} MB, "
        f"{time.time() - t0:.0f} s")
    return {"patches": count, "bytes": size, "images": len(shapes),
            "seconds": time.time() - t0}

"""Training data: random (LR, HR) crops from folders of HR images.

* HR images (PNG, BMP, JPEG, ...; gray or RGB, any alpha channel is ignored) are found
  recursively under the given folders and cropped to a multiple of the scale (``modcrop``).
* LR images are made once with the MATLAB-compatible :func:`rclut_numba.bicubic.downscale`
  and cached in one ``.npz`` per folder of the cache, keyed by the HR file's absolute path,
  mtime and size (an edited or replaced image is downscaled again).
* A training sample is one colour channel of a random ``crop x crop`` LR window and the
  matching ``scale*crop`` HR window, with a random horizontal flip, vertical flip and quarter
  turn.  Windows are drawn uniformly over all valid LR positions of all images (so each pixel
  is equally likely, whatever the image sizes); images smaller than a crop are skipped.

With ``flat_share`` > 0, each sample is instead, with that probability, a flat crop (LR and HR
one random grey level everywhere: a flat image downscales to itself), drawn from a generator
of its own seeded with ``(seed, step, 1)`` so the natural samples stay those of a run without
it.  It teaches flat in, flat out, which natural crops leave to chance.

With ``synthetic_share`` > 0, each sample that is not flat is instead, with that probability, a
drawn patch (``training/synthetic.py``: flat fills with hard edges, strokes and hatching,
stripes and grids, screentone) and its bicubic LR; whether and what are drawn from generators
seeded with ``(seed, step, 2)`` and ``(seed, step, 2, i)``, so again the natural samples stay
those of a run without it, and every rank draws the same sample ``i``.

With ``shares`` (one number per entry of ``dirs``), each entry's windows are drawn with that
share of the samples (normalised to sum to 1), uniformly over its own valid positions: a data
mix chosen by folder instead of by pixel count.

A training pack (``rclut-train pack``, ``training/pack.py``) can stand wherever a folder does:
a ``.npz`` of uint8 HR patches of one colour channel each, with their LR cut from the LR of the
whole image (the same LR a folder gives), validated when loaded (:func:`load_pack`).  Each
patch is then an image of its own: crops are drawn uniformly over all patches' positions.

Randomness is counter-based: the batch of step ``t`` is drawn from a generator seeded with
``(seed, t)``, so it is a pure function of the step.  Resuming from a checkpoint therefore
replays exactly the batches of an uninterrupted run with no generator state to carry, and
data-parallel ranks draw the same global batch and each take their own slice of it (so N
processes train on the same samples as one process with the whole batch).
"""
from __future__ import annotations

import hashlib
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rclut_numba.bicubic import downscale
from rclut_numba.fileio import atomic_write
from rclut_numba.imaging import IMAGE_EXTENSIONS, ImageError, read_image

from .synthetic import synthetic_pair

CACHE_VERSION = 1  # bump when the LR recipe changes: old cache entries are then ignored
PACK_FORMAT = "rclut-train-pack"
PACK_VERSION = 1
PACK_ARRAYS = ("format", "version", "scale", "hr", "lr", "origin", "sources")


class DataError(ValueError):
    """Training data that cannot be used; the message says which folder or file and why."""


def is_pack(path) -> bool:
    """Whether a ``--data`` entry names a training pack (a ``.npz`` file) or a folder."""
    return Path(path).suffix.lower() == ".npz"


@dataclass
class Pack:
    """A training pack as loaded: ``hr`` (N, s*P, s*P) and ``lr`` (N, P, P) uint8 patches,
    ``origin`` (N, 4): source index, channel, LR y, LR x of each patch in ``sources``."""

    scale: int
    hr: np.ndarray
    lr: np.ndarray
    origin: np.ndarray
    sources: list[str]

    @property
    def patch(self) -> int:
        return int(self.lr.shape[1])


def load_pack(path, scale: int | None = None, crop: int | None = None) -> Pack:
    """Read and validate a training pack; ``scale`` / ``crop``: what the training needs of it.

    Every problem (missing file, not a pack, damaged zip, wrong dtypes, shapes or scale,
    patches smaller than a crop) is a :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training pack {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in PACK_ARRAYS if k not in z.files]
            if missing:
                raise DataError(f"{path} is not a training pack (no {', '.join(missing)}; "
                                f"make one with rclut-train pack)")
            a = {k: z[k] for k in PACK_ARRAYS}  # reading checks each member's CRC
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read training pack {path}: {e}") from None
    if str(a["format"]) != PACK_FORMAT or int(a["version"]) != PACK_VERSION:
        raise DataError(f"{path}: format {a['format']} version {a['version']}, expected "
                        f"{PACK_FORMAT} version {PACK_VERSION}")
    s, hr, lr, origin = int(a["scale"]), a["hr"], a["lr"], a["origin"]
    if hr.dtype != np.uint8 or lr.dtype != np.uint8:
        raise DataError(f"{path}: patches must be uint8, got hr {hr.dtype}, lr {lr.dtype}")
    n = lr.shape[0] if lr.ndim == 3 else 0
    p = lr.shape[1] if lr.ndim == 3 else 0
    if (n < 1 or lr.shape != (n, p, p) or hr.shape != (n, s * p, s * p)
            or origin.shape != (n, 4) or a["sources"].ndim != 1):
        raise DataError(f"{path}: inconsistent shapes: lr {lr.shape}, hr {hr.shape}, origin "
                        f"{origin.shape} (expected (N, P, P), (N, {s}P, {s}P), (N, 4), N >= 1)")
    if scale is not None and s != scale:
        raise DataError(f"{path} holds x{s} patches; this model is x{scale} (make a pack with "
                        f"rclut-train pack --scale {scale})")
    if crop is not None and p < crop:
        raise DataError(f"{path} holds {p}px LR patches, smaller than the {crop}px crop (make "
                        f"a pack with --patch {crop} or more)")
    return Pack(s, hr, lr, origin, [str(x) for x in a["sources"]])


def entry_weights(shares, n_entries: int) -> np.ndarray | None:
    """``shares`` (one per data entry, > 0) normalised to sum to 1; None stays None."""
    if shares is None:
        return None
    try:
        w = np.array([float(x) for x in shares], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"data shares must be numbers, got {shares!r}") from None
    if len(w) != n_entries:
        raise DataError(f"{len(w)} data share(s) for {n_entries} data entr"
                        f"{'y' if n_entries == 1 else 'ies'}: give one share per entry")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise DataError(f"data shares must be finite and > 0, got {list(shares)}")
    return w / w.sum()


def find_images(dirs) -> list[Path]:
    """All image files under ``dirs`` (recursively), sorted for a reproducible order."""
    files = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise DataError(f"training data folder {d} does not exist")
        files.extend(p for p in d.rglob("*")
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under "
                        f"{', '.join(str(d) for d in dirs)}")
    return sorted(files, key=lambda p: str(p.resolve()))


def _cache_key(path: Path, scale: int) -> str:
    st = path.stat()
    ident = f"v{CACHE_VERSION}|x{scale}|{path.resolve()}|{st.st_mtime_ns}|{st.st_size}"
    return "k" + hashlib.sha1(ident.encode()).hexdigest()[:20]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of ``img`` whose sides are multiples of ``scale``."""
    h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
    return np.ascontiguousarray(img[:h, :w])


def channel_planes(img: np.ndarray) -> np.ndarray:
    """HxW or HxWxC -> (C, H, W), alpha dropped (it is not an image to learn from)."""
    if img.ndim == 2:
        return img[None]
    return np.ascontiguousarray(np.moveaxis(img[:, :, :3], 2, 0))


@dataclass
class _Item:
    path: Path
    hr: np.ndarray   # (C, sH, sW) uint8
    lr: np.ndarray   # (C, H, W) uint8


class SRDataset:
    """In-memory (LR, HR) pairs with reproducible random crops; see the module docstring."""

    def __init__(self, dirs, scale: int, crop: int, cache_dir, seed: int = 0,
                 log: Callable[[str], object] = print, build_cache: bool = True,
                 flat_share: float = 0.0, synthetic_share: float = 0.0, shares=None):
        self.scale, self.crop, self.seed = int(scale), int(crop), int(seed)
        dirs = list(dirs)
        weights = entry_weights(shares, len(dirs))
        for name, share in (("flat_share", flat_share), ("synthetic_share", synthetic_share)):
            if not 0.0 <= share < 1.0:
                raise DataError(f"{name} must be in [0, 1), got {share}")
        self.flat_share, self.synthetic_share = float(flat_share), float(synthetic_share)
        packs = [(e, Path(d)) for e, d in enumerate(dirs) if is_pack(d)]
        folders = [(e, d) for e, d in enumerate(dirs) if not is_pack(d)]
        files = find_images([d for _, d in folders]) if folders else []
        # which entry of `dirs` each file came from (the first folder that holds it)
        roots = [(e, Path(d).resolve()) for e, d in folders]
        entry_of = {f: next(e for e, r in roots if f.resolve().is_relative_to(r)) for f in files}
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_path = cache_dir / f"lr_x{self.scale}.npz"
        cached = {}
        if cache_path.is_file():
            try:
                with np.load(cache_path, allow_pickle=False) as z:
                    cached = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:  # a damaged cache is rebuilt, not fatal
                log(f"ignoring unreadable LR cache {cache_path}: {e}")
        t0, made, skipped = time.time(), 0, []
        self.items: list[_Item] = []
        item_entry: list[int] = []
        keys = {}
        for path in files:
            try:
                hr = modcrop(read_image(path), self.scale)
            except ImageError as e:
                raise DataError(str(e)) from None
            if hr.shape[0] < self.scale * self.crop or hr.shape[1] < self.scale * self.crop:
                skipped.append(path.name)
                continue
            key = _cache_key(path, self.scale)
            lr = cached.get(key)
            if lr is None or lr.shape[:2] != (hr.shape[0] // self.scale, hr.shape[1] // self.scale):
                lr = downscale(hr, self.scale)
                made += 1
            keys[key] = lr
            self.items.append(_Item(path, channel_planes(hr), channel_planes(lr)))
            item_entry.append(entry_of[path])
        n_images = len(self.items)
        for e, pack_path in packs:
            pack = load_pack(pack_path, self.scale, self.crop)
            self.items += [_Item(Path(f"{pack_path}#{i}"), hr[None], lr[None])
                           for i, (hr, lr) in enumerate(zip(pack.hr, pack.lr, strict=True))]
            item_entry += [e] * len(pack.hr)
            log(f"training pack {pack_path}: {len(pack.hr)} patches of {pack.patch}px LR")
        if not self.items:
            raise DataError(f"no training image is at least {self.scale * self.crop} pixels on "
                            f"each side ({len(files)} found, all too small)")
        if made and build_cache:
            with atomic_write(cache_path) as f:
                np.savez(f, **keys)
        if skipped:
            log(f"skipped {len(skipped)} image(s) smaller than one {self.scale * self.crop}px "
                f"HR crop (e.g. {skipped[0]})")
        from_packs = f", {len(self.items) - n_images} pack patches" if packs else ""
        log(f"training data: {n_images} images, {made} downscaled now, {n_images - made} from "
            f"cache {cache_path}{from_packs} ({time.time() - t0:.1f}s)")
        # Crop positions per image; sampling an image with these weights makes every valid
        # LR window equally likely (within each entry of `dirs` when shares are given).
        n_pos = np.array([(it.lr.shape[1] - self.crop + 1) * (it.lr.shape[2] - self.crop + 1)
                          for it in self.items], dtype=np.float64)
        if weights is None:
            self._p = n_pos / n_pos.sum()
        else:
            entry = np.array(item_entry)
            per_entry = np.bincount(entry, weights=n_pos, minlength=len(dirs))
            empty = [str(dirs[e]) for e in range(len(dirs)) if per_entry[e] == 0]
            if empty:
                raise DataError(f"training data {empty[0]} has a share but no image of at least "
                                f"{self.scale * self.crop} pixels on each side")
            self._p = weights[entry] * n_pos / per_entry[entry]
        self.entry_shares = np.bincount(np.array(item_entry), weights=self._p,
                                        minlength=len(dirs))
        if weights is not None:
            log("data shares: " + ", ".join(f"{Path(d).name} {w:.1%}"
                                            for d, w in zip(dirs, self.entry_shares, strict=True)))

    def __len__(self):
        return len(self.items)

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1):
        """The ``rank``-th slice of step ``step``'s global batch of ``batch_size`` samples.

        Returns ``(lr, hr)`` float32 tensors ``(b, 1, crop, crop)`` and
        ``(b, 1, s*crop, s*crop)`` holding pixel / 255, ``b = batch_size // world``.
        """
        if batch_size % world:
            raise DataError(f"batch_size {batch_size} is not divisible by {world} processes")
        rng = np.random.default_rng([self.seed, int(step)])
        n, c, s = batch_size, self.crop, self.scale
        # Draw every sample of the global batch (same on every rank), then keep our slice.
        img = rng.choice(len(self.items), size=n, p=self._p)
        u = rng.random((n, 3))
        aug = rng.integers(0, 2, size=(n, 2))
        rot = rng.integers(0, 4, size=n)
        per = n // world
        lo, hi = rank * per, (rank + 1) * per
        flat_level = np.full(n, -1)
        if self.flat_share:
            flat_rng = np.random.default_rng([self.seed, int(step), 1])
            is_flat = flat_rng.random(n) < self.flat_share
            flat_level[is_flat] = flat_rng.integers(0, 256, n)[is_flat]
        drawn = np.zeros(n, bool)
        if self.synthetic_share:
            drawn_rng = np.random.default_rng([self.seed, int(step), 2])
            drawn = drawn_rng.random(n) < self.synthetic_share
        lrs, hrs = [], []
        for i in range(lo, hi):
            if flat_level[i] >= 0:
                lrs.append(np.full((c, c), flat_level[i], np.uint8))
                hrs.append(np.full((s * c, s * c), flat_level[i], np.uint8))
                continue
            if drawn[i]:
                lr, hr = synthetic_pair(np.random.default_rng([self.seed, int(step), 2, i]), c, s)
                lrs.append(lr)
                hrs.append(hr)
                continue
            it = self.items[img[i]]
            ch = min(int(u[i, 0] * it.lr.shape[0]), it.lr.shape[0] - 1)
            y = min(int(u[i, 1] * (it.lr.shape[1] - c + 1)), it.lr.shape[1] - c)
            x = min(int(u[i, 2] * (it.lr.shape[2] - c + 1)), it.lr.shape[2] - c)
            lr = it.lr[ch, y:y + c, x:x + c]
            hr = it.hr[ch, s * y:s * (y + c), s * x:s * (x + c)]
            if aug[i, 0]:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            if aug[i, 1]:
                lr, hr = lr[::-1], hr[::-1]
            if rot[i]:
                lr, hr = np.rot90(lr, rot[i]), np.rot90(hr, rot[i])
            lrs.append(lr)
            hrs.append(hr)
        lr_t = torch.from_numpy(np.stack(lrs)[:, None].astype(np.float32)).div_(255.0)
        hr_t = torch.from_numpy(np.stack(hrs)[:, None].astype(np.float32)).div_(255.0)
        return lr_t, hr_t


def synthetic_images(folder, n: int = 4, size: int = 96, seed: int = 0) -> list[Path]:
    """Write ``n`` smooth random RGB/gray PNGs (for tests and demos without real data)."""
    from rclut_numba.imaging import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        chans = []
        for _ in range(3 if i % 2 == 0 else 1):
            f = rng.uniform(1, 6, size=2)
            ph = rng.uniform(0, 6.3, size=2)
            v = 0.5 + 0.25 * (np.sin(2 * np.pi * f[0] * xx + ph[0])
                              * np.cos(2 * np.pi * f[1] * yy + ph[1]))
            v = v + 0.05 * rng.standard_normal((size, size))
            chans.append(np.clip(v * 255, 0, 255).astype(np.uint8))
        img = np.stack(chans, -1) if len(chans) == 3 else chans[0]
        p = folder / f"synth_{i}.png"
        write_image(p, img, force=True)
        out.append(p)
    return out

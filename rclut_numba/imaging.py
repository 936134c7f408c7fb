"""Image files in and out, and the colour conversions the engine uses.

Everything here works on ``uint8`` arrays shaped HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA).
Reading goes through imageio's v3 API with its pillow plugin; on top of it this module
checks what Pillow would let through silently (a PNG or JPEG cut short, 16-bit or float
samples, several frames) and turns every failure into one :class:`ImageError` whose
one-line message names the file.

Writing is atomic: the image is encoded into a temporary file in the destination folder and
moved into place with :func:`os.replace`, so a reader never sees half a file and a failure
leaves nothing behind.
"""
from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from .fileio import atomic_write

__all__ = [
    "ImageError",
    "read_image",
    "write_image",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "WRITE_FORMATS",
    "IMAGE_EXTENSIONS",
]


class ImageError(ValueError):
    """An image file that cannot be read or written; the message names the file."""


# Extension -> (format name for messages, whether the format can store an alpha channel).
WRITE_FORMATS: dict[str, tuple[str, bool]] = {
    ".png": ("PNG", True),
    ".bmp": ("BMP", False),  # Pillow writes 32-bit BMP but reads it back without alpha
    ".jpg": ("JPEG", False),
    ".jpeg": ("JPEG", False),
    ".tif": ("TIFF", True),
    ".tiff": ("TIFF", True),
    ".webp": ("WebP", True),
}
# The files a folder of images is taken to hold (evaluation sets, training data, batches).
IMAGE_EXTENSIONS = tuple(WRITE_FORMATS)

# Pillow modes that carry 8-bit samples, and the mode each is converted to on reading.
# None keeps imageio's own conversion (palette images become RGB or RGBA there).
_READ_CONVERSIONS: dict[str, str | None] = {
    "L": None,
    "RGB": None,
    "RGBA": None,
    "P": None,
    "PA": "RGBA",
    "1": "L",  # bilevel: 0/255 gray rather than a bool array
    "LA": "RGBA",  # gray + alpha: the engine handles RGB(A) and gray, not two channels
    "La": "RGBA",  # premultiplied variants: Pillow un-premultiplies on conversion
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
}

# What imageio/Pillow say when no decoder recognises the bytes.
_NOT_AN_IMAGE_HINTS = ("can not handle", "cannot identify", "initializing plugin")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"


def _fail(path, what: str) -> ImageError:
    # One line whatever the underlying library said.
    what = " ".join(str(what).split())
    return ImageError(f"{path}: {what}")


def _check_png_complete(data: bytes, path) -> None:
    """Walk the PNG chunks; Pillow happily decodes a PNG whose tail (IEND, a CRC) is cut off."""
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise _fail(path, "truncated PNG file (ends inside a chunk header, no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4  # header + data + CRC
        if end > len(data):
            raise _fail(path, f"truncated PNG file (chunk {ctype!r} is cut short)")
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise _fail(path, f"corrupt PNG file (CRC mismatch in chunk {ctype!r})")
        if ctype == b"IEND":
            return
        pos = end


def _check_jpeg_complete(data: bytes, path) -> None:
    """Require an end-of-image marker after the last start-of-scan.

    Inside entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so an
    EOI (FF D9) after the last SOS (FF DA) can only be the real end of the image. This does
    not rely on Pillow's ``LOAD_TRUNCATED_IMAGES`` flag, which any other code may have set.
    """
    sos = data.rfind(b"\xff\xda")
    if sos < 0 or data.find(b"\xff\xd9", sos + 2) < 0:
        raise _fail(path, "truncated JPEG file (no end-of-image marker)")


def _decode(data: bytes, path) -> np.ndarray:
    with iio.imopen(data, "r", plugin="pillow") as f:
        n_images = f.properties(index=...).n_images or 1
        if n_images > 1:
            raise _fail(path, f"holds {n_images} frames (animation or multi-page file); "
                        "only single images are supported")
        meta = f.metadata(index=0, exclude_applied=False)
        mode = meta.get("mode", "")
        if mode not in _READ_CONVERSIONS and not mode.startswith(("I", "F")):
            raise _fail(path, f"unsupported image mode {mode!r}")
        convert = _READ_CONVERSIONS.get(mode)
        if mode == "P" and "transparency" in meta:
            convert = "RGBA"  # imageio would drop the tRNS transparency otherwise
        return f.read(index=0, mode=convert)


def read_image(path) -> np.ndarray:
    """Read an image file as ``uint8``: HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA).

    Conversions: palette images become RGB, or RGBA when the palette has transparency;
    gray + alpha (LA) becomes RGBA with the gray value in R, G and B; bilevel images become
    0/255 gray; CMYK and YCbCr become RGB. EXIF orientation is ignored (the stored pixel grid
    is what gets upscaled).

    Raises :class:`ImageError` for a missing or unreadable file, a file that is not an image,
    a truncated PNG/JPEG (or any file Pillow reports as truncated), a zero-size image,
    16-bit / 32-bit / floating-point samples, other unsupported modes, and files holding more
    than one frame (animated GIF/PNG, multi-page TIFF).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise _fail(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise _fail(path, "empty file, not an image")
    # Structural checks first: Pillow may decode a cut-off file without complaint.
    if data.startswith(_PNG_SIGNATURE):
        _check_png_complete(data, path)
    elif data.startswith(_JPEG_SOI):
        _check_jpeg_complete(data, path)

    # Warnings are recorded, not shown: Pillow reports some short reads (TIFF strips, EXIF
    # blocks) only as a warning, which is turned into an error below; others are re-emitted.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = _decode(data, path)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow/imageio raise many unrelated types
            text = str(exc)
            if "truncated" in text:
                raise _fail(path, f"truncated image file ({text})") from None
            if any(s in text for s in _NOT_AN_IMAGE_HINTS):
                raise _fail(path, "not an image file (or an unsupported format)") from None
            raise _fail(path, f"cannot decode image ({type(exc).__name__}: {text})") from None
    for w in caught:
        if "truncated" in str(w.message).lower():
            raise _fail(path, f"truncated image file ({w.message})")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    image = np.asarray(image)
    if image.dtype != np.uint8:
        if image.dtype == np.bool_:
            image = image.astype(np.uint8) * 255
        elif image.dtype.kind == "f":
            raise _fail(path, f"floating-point samples ({image.dtype}) are not supported; "
                        "only 8-bit images")
        else:
            bits = image.dtype.itemsize * 8
            raise _fail(path, f"{bits}-bit samples are not supported; only 8-bit images")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise _fail(path, f"unsupported image layout {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise _fail(path, f"zero-size image ({image.shape[0]}x{image.shape[1]})")
    return np.ascontiguousarray(image)


def write_image(path, array, force: bool = False) -> None:
    """Write a ``uint8`` HxW, HxWx3 or HxWx4 array to ``path`` atomically.

    The format comes from the extension (see ``WRITE_FORMATS``): JPEG is written at quality
    95, WebP lossless, and JPEG and BMP cannot hold alpha. An existing file is replaced only
    when ``force`` is true. The image is encoded into a temporary file beside the target and
    moved into place with :func:`os.replace`; on any failure the temporary file is removed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_FORMATS:
        known = ", ".join(sorted(WRITE_FORMATS))
        raise _fail(path, f"unknown image extension {ext or '(none)'!r}; use one of {known}")
    fmt, has_alpha = WRITE_FORMATS[ext]
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise _fail(path, f"cannot write a {array.dtype} array; expected uint8")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise _fail(path, f"cannot write an array of shape {array.shape}; "
                    "expected HxW, HxWx3 or HxWx4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise _fail(path, f"cannot write a zero-size image {array.shape}")
    if array.ndim == 3 and array.shape[2] == 4 and not has_alpha:
        raise _fail(path, f"{fmt} cannot store an alpha channel; use .png")
    folder = path.parent
    if not folder.is_dir():
        raise _fail(path, f"output folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise _fail(path, "is a directory")
    if path.exists() and not force:
        raise _fail(path, "exists; use --force to overwrite")

    # JPEG at 95 rather than Pillow's 75; WebP lossless (its lossy default would blur SR output)
    # and exact (keep RGB under fully transparent pixels).
    kwargs = {"JPEG": {"quality": 95}, "WebP": {"lossless": True, "exact": True}}.get(fmt, {})
    try:
        with atomic_write(path) as fh:
            iio.imwrite(fh, np.ascontiguousarray(array), plugin="pillow", extension=ext, **kwargs)
            # Checked again before publishing: another process may have created it meanwhile.
            if path.exists() and not force:
                raise _fail(path, "exists; use --force to overwrite")
    except BaseException as exc:
        if isinstance(exc, ImageError) or not isinstance(exc, Exception):
            raise
        raise _fail(path, f"cannot write image ({type(exc).__name__}: {exc})") from None


# --- colour -------------------------------------------------------------------------------
# BT.601 "studio swing", as MATLAB's rgb2ycbcr for 0..255 inputs and the SR scoring protocol:
# [Y Cb Cr] = offset + M @ [R G B] / 255.
YCC_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
YCC_OFFSET = np.array([16.0, 128.0, 128.0])
YCC_INVERSE = np.linalg.inv(YCC_MATRIX / 255.0)


def rgb_to_ycbcr(rgb) -> np.ndarray:
    """RGB (HxWx3, values 0..255) to float64 Y, Cb, Cr (unrounded, Y in 16..235)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_ycbcr expects an HxWx3 array, got shape {rgb.shape}")
    return rgb.astype(np.float64) @ (YCC_MATRIX.T / 255.0) + YCC_OFFSET


def ycbcr_to_rgb(ycbcr) -> np.ndarray:
    """Float Y, Cb, Cr (HxWx3) back to ``uint8`` RGB: clipped to 0..255, rounded half up
    (MATLAB's conversion to uint8)."""
    ycbcr = np.asarray(ycbcr, dtype=np.float64)
    if ycbcr.ndim != 3 or ycbcr.shape[2] != 3:
        raise ValueError(f"ycbcr_to_rgb expects an HxWx3 array, got shape {ycbcr.shape}")
    rgb = (ycbcr - YCC_OFFSET) @ YCC_INVERSE.T
    return np.floor(np.clip(rgb, 0.0, 255.0) + 0.5).astype(np.uint8)

"""Image reading/writing: conversions, every refusal, atomic writes; colour conversions."""
import os
import struct
import sys
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageFile

from rclut_numba import imaging
from rclut_numba.imaging import ImageError, read_image, rgb_to_ycbcr, write_image, ycbcr_to_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)


def one_line_naming(exc_info, path):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# --- reading ------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp"])
@pytest.mark.parametrize("channels", [0, 3, 4])
def test_lossless_roundtrip(tmp_path, ext, channels):
    if channels == 0:
        img = RGB[:, :, 0].copy()
    elif channels == 3:
        img = RGB
    else:
        img = np.dstack([RGB, RGB[:, :, 1]])
    p = tmp_path / f"x{ext}"
    if ext == ".bmp" and channels == 4:
        with pytest.raises(ImageError, match="alpha"):
            write_image(p, img)
        return
    write_image(p, img)
    back = read_image(p)
    assert back.dtype == np.uint8
    if ext == ".webp" and channels == 0:
        # WebP has no gray mode: it comes back as RGB
        np.testing.assert_array_equal(back, np.repeat(img[:, :, None], 3, axis=2))
    else:
        np.testing.assert_array_equal(back, img)


def test_jpeg_roundtrip_close(tmp_path):
    img = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    write_image(tmp_path / "a.jpg", img)
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == img.shape
    assert np.abs(back.astype(int) - img).max() <= 3


def test_palette_and_other_modes(tmp_path):
    Image.fromarray(RGB).convert("P").save(tmp_path / "p.png")
    p = read_image(tmp_path / "p.png")
    assert p.shape == RGB.shape
    np.testing.assert_array_equal(p, np.asarray(Image.open(tmp_path / "p.png").convert("RGB")))

    pal = Image.fromarray(RGB).convert("P")
    pal.save(tmp_path / "pt.png", transparency=int(np.asarray(pal)[0, 0]))
    pt = read_image(tmp_path / "pt.png")
    assert pt.shape == RGB.shape[:2] + (4,) and pt[0, 0, 3] == 0 and pt[..., 3].max() == 255

    Image.fromarray(np.dstack([RGB[:, :, 0], RGB[:, :, 1]]), "LA").save(tmp_path / "la.png")
    la = read_image(tmp_path / "la.png")
    assert la.shape == RGB.shape[:2] + (4,)
    for c in range(3):
        np.testing.assert_array_equal(la[:, :, c], RGB[:, :, 0])
    np.testing.assert_array_equal(la[:, :, 3], RGB[:, :, 1])

    Image.fromarray(RGB[:, :, 0] > 128).save(tmp_path / "b.png")
    b = read_image(tmp_path / "b.png")
    assert b.dtype == np.uint8 and set(np.unique(b)) <= {0, 255}

    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "c.tif")
    assert read_image(tmp_path / "c.tif").shape == RGB.shape

    Image.fromarray(RGB).convert("P").save(tmp_path / "one.gif")
    assert read_image(tmp_path / "one.gif").shape == RGB.shape


@pytest.fixture(params=["png", "jpg", "bmp", "tif"])
def image_bytes(request, tmp_path):
    p = tmp_path / f"full.{request.param}"
    Image.fromarray(RGB).save(p)
    return request.param, p.read_bytes()


@pytest.mark.parametrize("keep", ["-2", "-12", "half", "100"])
def test_truncated_raises(tmp_path, image_bytes, keep):
    ext, data = image_bytes
    n = {"-2": len(data) - 2, "-12": len(data) - 12, "half": len(data) // 2, "100": 100}[keep]
    if ext in ("bmp", "tif") and keep in ("-2", "-12"):
        pytest.skip("no end marker in BMP/TIFF: only Pillow's own truncation check applies")
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(data[:n])
    with pytest.raises(ImageError) as e:
        read_image(p)
    msg = one_line_naming(e, p)
    assert "truncated" in msg or "not an image" in msg


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_raises_even_if_pillow_is_lenient(tmp_path, monkeypatch, ext):
    # Other code in the process may have set this global; a cut file must still be refused.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    Image.fromarray(RGB).save(tmp_path / f"a.{ext}")
    data = (tmp_path / f"a.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / f"cut.{ext}")


def test_corrupt_png_crc(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[-20] ^= 0xFF  # inside the last IDAT
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="CRC"):
        read_image(tmp_path / "bad.png")


def test_missing_directory_empty_and_not_image(tmp_path):
    for p, words in [
        (tmp_path / "nope.png", "no such file"),
        (tmp_path, "directory"),
    ]:
        with pytest.raises(ImageError, match=words) as e:
            read_image(p)
        one_line_naming(e, p)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello, this is not an image\n" * 10)
    with pytest.raises(ImageError, match="not an image") as e:
        read_image(tmp_path / "text.png")
    one_line_naming(e, tmp_path / "text.png")


def _png_chunk(ctype, payload):
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload))


def test_zero_size_png(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)  # width 0
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    (tmp_path / "zero.png").write_bytes(data)
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "zero.png")
    one_line_naming(e, tmp_path / "zero.png")


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("i16.png", lambda: Image.fromarray(np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000),
         "16-bit"),
        ("f.tif", lambda: Image.fromarray(np.ones((4, 5), np.float32)), "floating-point"),
        ("i32.tif", lambda: Image.fromarray(RGB[:, :, 0]).convert("I"), "32-bit"),
    ],
)
def test_unsupported_depths(tmp_path, name, make, words):
    make().save(tmp_path / name)
    with pytest.raises(ImageError, match=words) as e:
        read_image(tmp_path / name)
    one_line_naming(e, tmp_path / name)


@pytest.mark.parametrize("name", ["anim.gif", "pages.tif", "anim.png"])
def test_multi_frame_refused(tmp_path, name):
    frames = [Image.fromarray(RGB), Image.fromarray(RGB[::-1].copy())]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="2 frames") as e:
        read_image(tmp_path / name)
    one_line_naming(e, tmp_path / name)


# --- writing ------------------------------------------------------------------------------
def leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_overwrite_refused_then_forced(tmp_path):
    p = tmp_path / "out.png"
    write_image(p, RGB)
    before = p.read_bytes()
    with pytest.raises(ImageError, match="exists; use --force to overwrite") as e:
        write_image(p, RGB[::-1])
    one_line_naming(e, p)
    assert p.read_bytes() == before
    write_image(p, RGB[::-1].copy(), force=True)
    np.testing.assert_array_equal(read_image(p), RGB[::-1])
    assert leftovers(tmp_path, {"out.png"}) == []


def test_write_errors(tmp_path):
    cases = [
        (tmp_path / "missing" / "a.png", RGB, "does not exist"),
        (tmp_path / "a.xyz", RGB, "unknown image extension"),
        (tmp_path / "noext", RGB, "unknown image extension"),
        (tmp_path / "a.jpg", np.dstack([RGB, RGB[:, :, 0]]), "alpha"),
        (tmp_path / "a.png", RGB.astype(np.float32), "uint8"),
        (tmp_path / "a.png", np.zeros((3, 4, 2), np.uint8), "shape"),
        (tmp_path / "a.png", np.zeros((0, 4), np.uint8), "zero-size"),
    ]
    for path, arr, words in cases:
        with pytest.raises(ImageError, match=words) as e:
            write_image(path, arr)
        one_line_naming(e, path)
    assert leftovers(tmp_path, set()) == []


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old contents")

    def broken(fh, *args, **kwargs):
        fh.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(imaging.iio, "imwrite", broken)
    with pytest.raises(ImageError, match="disk full") as e:
        write_image(target, RGB, force=True)
    one_line_naming(e, target)
    assert target.read_bytes() == b"old contents"  # the old file is untouched
    with pytest.raises(ImageError):
        write_image(tmp_path / "new.png", RGB)
    assert leftovers(tmp_path, {"out.png"}) == []  # no temp file, no partial new.png


def test_interrupted_write_cleans_up(tmp_path, monkeypatch):
    def interrupted(fh, *args, **kwargs):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(imaging.iio, "imwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "a.png", RGB)
    assert leftovers(tmp_path, set()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_written_file_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", RGB)
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


def test_written_png_is_standard(tmp_path):
    write_image(tmp_path / "a.png", RGB)
    np.testing.assert_array_equal(iio.imread(tmp_path / "a.png"), RGB)


# --- colour -------------------------------------------------------------------------------
def test_ycbcr_known_values():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]], np.uint8)
    ycc = rgb_to_ycbcr(px)
    assert ycc.dtype == np.float64
    np.testing.assert_allclose(ycc[0, 0], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 1], [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 2], [16 + 65.481, 128 - 37.797, 128 + 112], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 3], [16 + 24.966, 128 + 112, 128 - 18.214], atol=1e-9)


def test_ycbcr_roundtrip_exact():
    rgb = np.random.default_rng(5).integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, rgb)


def test_ycbcr_to_rgb_clips_and_rounds():
    ycc = np.array([[[300.0, 128, 128], [0.0, 128, 128], [16 + 219 * 100.5 / 255, 128, 128]]])
    np.testing.assert_array_equal(ycbcr_to_rgb(ycc)[0], [[255] * 3, [0] * 3, [101] * 3])


def test_ycbcr_shape_errors():
    with pytest.raises(ValueError):
        rgb_to_ycbcr(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        ycbcr_to_rgb(np.zeros((4, 4, 4)))

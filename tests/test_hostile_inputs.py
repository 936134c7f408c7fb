"""Files from strangers: crafted models and images are refused fast, in bounded memory, with a
one-line error and no traceback. Every hostile file is built here, small on disk (hostile.py)."""
import json
import os
import re
import sys

import numpy as np
import pytest

from hostile import CLI, Bomb, npy_bytes, png_bomb, png_bytes, run_python, write_zip
from rclut_numba.bundle import BundleError, load_bundle
from rclut_numba.importers import import_mulut_folder, import_srlut_file
from rclut_numba.spec import ModelSpec

SPEC = {"name": "t", "scale": 2, "interval": 64, "stages": [["S"]], "format_version": 2}
LUT_SHAPE = (5 ** 4, 4)  # interval 64: 5 levels; x2: 4 outputs


def one_line(msg: str) -> str:
    """The whole of ``msg``, checked to be one line without a traceback."""
    msg = msg.strip()
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def good_lut() -> bytes:
    return npy_bytes(LUT_SHAPE, data=bytes(LUT_SHAPE[0] * LUT_SHAPE[1]))


def test_handmade_bundle_is_valid(tmp_path):
    # the builders make real bundles: a refusal below is about the hostile part only
    write_zip(tmp_path / "ok.npz", {"spec.json": json.dumps(SPEC).encode(),
                                     "s1_b1_lut.npy": good_lut()})
    spec, arrays = load_bundle(tmp_path / "ok.npz")
    assert spec == ModelSpec.from_dict(SPEC) and arrays["s1_b1_lut"].shape == LUT_SHAPE


# ---- bundles: bombs are refused from the zip directory and the .npy header ---------------------
def test_lut_member_inflating_to_1gb_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.npz"
    write_zip(path, {"spec.json": json.dumps(SPEC).encode(),
                     "s1_b1_lut.npy": Bomb(2 ** 30, head=npy_bytes((2 ** 30 - 128,)))})
    assert path.stat().st_size < 2_000_000
    r = run_python(CLI, "info", str(path))
    assert r.rc != 0 and "declares 1073.7 MB" in one_line(r.err)
    assert r.peak_mb < 600, r.peak_mb
    with pytest.raises(BundleError, match=r"s1_b1_lut.npy.*declares .* more than"):
        load_bundle(path)


def test_member_that_inflates_past_its_declared_size(tmp_path):
    # the directory says the right size; the data says 1 GB: reading stops at the declared size
    path = tmp_path / "liar.npz"
    size = len(good_lut())
    write_zip(path, {"spec.json": json.dumps(SPEC).encode(),
                     "s1_b1_lut.npy": Bomb(2 ** 30, head=good_lut()[:128])},
              declared={"s1_b1_lut.npy": size})
    r = run_python(CLI, "info", str(path))
    assert r.rc != 0 and "corrupted bundle" in one_line(r.err)
    assert r.peak_mb < 600, r.peak_mb


def test_one_gb_spec_json_is_refused_unread(tmp_path):
    path = tmp_path / "spaces.npz"
    write_zip(path, {"spec.json": Bomb(2 ** 30, fill=b" ", head=json.dumps(SPEC).encode()),
                     "s1_b1_lut.npy": good_lut()})
    r = run_python(CLI, "info", str(path))
    assert r.rc != 0 and "spec.json declares 1073.7 MB" in one_line(r.err)
    assert r.peak_mb < 600, r.peak_mb
    # a spec.json that lies about its size is cut off at the cap, not read to the end
    write_zip(path, {"spec.json": Bomb(2 ** 30, fill=b" ", head=json.dumps(SPEC).encode()),
                     "s1_b1_lut.npy": good_lut()}, declared={"spec.json": 1000})
    with pytest.raises(BundleError):
        load_bundle(path)


def test_npy_header_claiming_1e12_entries(tmp_path):
    path = tmp_path / "huge.npz"
    write_zip(path, {"spec.json": json.dumps(SPEC).encode(),
                     "s1_b1_lut.npy": npy_bytes((10 ** 12,), data=b"\0" * 100)})
    with pytest.raises(BundleError,
                       match=r"s1_b1_lut.*shape \(1000000000000,\), expected \(625, 4\)"):
        load_bundle(path)
    write_zip(path, {"spec.json": json.dumps(SPEC).encode(),
                     "s1_b1_lut.npy": npy_bytes(LUT_SHAPE, data=b"\0" * 100)})
    with pytest.raises(BundleError, match="truncated array"):
        load_bundle(path)


def test_spec_asking_for_huge_tables(tmp_path):
    spec = dict(SPEC, interval=4, scale=8, stages=[["S", "D"]])
    path = tmp_path / "greedy.npz"
    write_zip(path, {"spec.json": json.dumps(spec).encode()})
    with pytest.raises(BundleError, match=r"asks for 2284.9 MB of tables"):
        load_bundle(path)


@pytest.mark.parametrize("change, msg", [
    ({"interval": 16.0}, "interval must be an integer"),
    ({"scale": True}, "scale must be an integer"),
    ({"stages": [[{"pattern": ["S"]}]]}, "pattern must be a string"),
    ({"stages": [[{"pattern": {"S": 1}}]]}, "pattern must be a string"),
    ({"stages": [[{"pattern": "S", "rc": 3.0}]]}, "rc must be an integer"),
    ({"name": {"a": 1}}, "name must be a string"),
    ({"format_version": "2"}, "format_version"),
    ({"stages": "S"}, "must be a list"),
    ({"extra": []}, "extra"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"residual": 1, "format_version": 3}, "residual must be true or false"),
    ({"residual": "yes", "format_version": 3}, "residual must be true or false"),
    ({"residual": True}, "format_version 2 has no residual"),
    ({"orientations": 8, "format_version": 3}, "format_version 3 has no 'orientations'"),
    ({"orientations": 6, "format_version": 4}, "orientations must be 4 or 8, got 6"),
    ({"orientations": 8.0, "format_version": 4}, "orientations must be 4 or 8, got 8.0"),
])
def test_spec_field_types(tmp_path, change, msg):
    path = tmp_path / "m.npz"
    write_zip(path, {"spec.json": json.dumps(dict(SPEC, **change)).encode(),
                     "s1_b1_lut.npy": good_lut()})
    with pytest.raises(BundleError, match=msg) as e:
        load_bundle(path)
    one_line(str(e.value))


def test_interval_float_through_the_cli(tmp_path, capsys):
    from rclut_numba.cli import main
    path = tmp_path / "m.npz"
    write_zip(path, {"spec.json": json.dumps(dict(SPEC, interval=64.0)).encode(),
                     "s1_b1_lut.npy": good_lut()})
    assert main(["info", str(path)]) == 2
    assert "interval must be an integer" in one_line(capsys.readouterr().err)


def test_foreign_members_and_dtypes(tmp_path):
    path = tmp_path / "m.npz"
    write_zip(path, {"spec.json": json.dumps(SPEC).encode(), "s1_b1_lut.npy": good_lut(),
                     "notes.txt": b"hi"})
    with pytest.raises(BundleError, match="unexpected member 'notes.txt'"):
        load_bundle(path)
    write_zip(path, {"spec.json": json.dumps(SPEC).encode(),
                     "s1_b1_lut.npy": npy_bytes((625, 1), "<f4", bytes(4 * 625))})
    with pytest.raises(BundleError, match="integer arrays only"):
        load_bundle(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
def test_model_path_special_files(tmp_path):
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    with pytest.raises(BundleError, match="cannot read model") as e:
        load_bundle(loop)
    one_line(str(e.value))
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle(fifo)  # refused, not waited on
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle("/dev/zero")


# ---- MuLUT folders and SR-LUT files ------------------------------------------------------------
MULUT_ROWS = 17 ** 4


@pytest.fixture
def mulut_folder(tmp_path):
    d = tmp_path / "luts"
    d.mkdir()
    for stage in (1, 2):
        for mode in "sdy":
            outs = 16 if stage == 2 else 1
            np.save(d / f"LUT_x4_4bit_int8_s{stage}_{mode}.npy",
                    np.zeros((MULUT_ROWS, 1, outs), np.int8))  # MuLUT's own odd shapes
    return d


def test_mulut_folder_complete(mulut_folder):
    spec, arrays = import_mulut_folder(mulut_folder)
    assert spec.describe().endswith("stages [S, D, Y | S, D, Y]")
    assert arrays["s2_b3_lut"].shape == (MULUT_ROWS, 16)


def test_mulut_folder_missing_one_file(mulut_folder, tmp_path, capsys):
    from rclut_numba.cli import main
    (mulut_folder / "LUT_x4_4bit_int8_s2_y.npy").unlink()
    with pytest.raises(BundleError, match=r"missing LUT_x4_4bit_int8_s2_y.npy \(a MuLUT folder"):
        import_mulut_folder(mulut_folder)
    out = tmp_path / "smaller.npz"
    assert main(["convert", str(mulut_folder), "-o", str(out)]) == 2
    assert "missing LUT_x4_4bit_int8_s2_y.npy" in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_mulut_folder_extra_stage_and_bad_file(mulut_folder):
    np.save(mulut_folder / "LUT_x4_4bit_int8_s3_s.npy", np.zeros((MULUT_ROWS, 16), np.int8))
    with pytest.raises(BundleError, match="unexpected stage 3"):
        import_mulut_folder(mulut_folder)
    (mulut_folder / "LUT_x4_4bit_int8_s3_s.npy").unlink()
    (mulut_folder / "LUT_x4_4bit_int8_s1_d.npy").write_bytes(npy_bytes((10 ** 12,)))
    with pytest.raises(BundleError, match=r"s1_d.npy: has 1000000000000 entries"):
        import_mulut_folder(mulut_folder)


@pytest.mark.parametrize("name, content, msg", [
    ("LUT_x4_4bit_int8.npy", npy_bytes(()), "0-d array"),
    ("lut.npy", npy_bytes(()), "0-d array"),
    ("lut.npy", npy_bytes((7,), data=b"\0" * 7), "cannot tell scale"),
    ("lut.npy", npy_bytes((10 ** 12, 16)), "cannot tell scale"),
    ("LUT_x4_4bit_int8.npy", npy_bytes((10 ** 12, 16)), "has 16000000000000 entries"),
    ("LUT_x4_4bit_int8.npy", npy_bytes((MULUT_ROWS, 16), data=b"\0" * 10), "truncated"),
    ("LUT_x4_4bit_int8.npy", npy_bytes((MULUT_ROWS, 16), "<i2"), "expected an int8 array"),
    ("LUT_x4_4bit_int8.npy", npy_bytes((2,), "|O"), "object array"),
    ("LUT_x4_4bit_int8.npy", b"not numpy at all", "not a valid .npy"),
    ("LUT_x4_9bit_int8.npy", npy_bytes((2,)), "9-bit"),
])
def test_srlut_files_refused_cleanly(tmp_path, capsys, name, content, msg):
    from rclut_numba.cli import main
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BundleError, match=msg):
        import_srlut_file(path)
    assert main(["info", str(path)]) == 2
    assert msg.split()[0] in one_line(capsys.readouterr().err)


def test_srlut_file_by_shape(tmp_path):
    np.save(tmp_path / "lut.npy", np.zeros((9 ** 4, 9), np.int8))  # interval 32, x3
    spec, arrays = import_srlut_file(tmp_path / "lut.npy")
    assert (spec.scale, spec.interval) == (3, 32) and arrays["s1_b1_lut"].shape == (9 ** 4, 9)


# ---- images ------------------------------------------------------------------------------------
def test_png_header_claiming_100000_squared(tmp_path):
    from rclut_numba.imaging import ImageError, read_image
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(100_000, 100_000))
    with pytest.raises(ImageError, match=r"image is 100000x100000 \(10000.0 Mpixel\), more than "
                                         r"the limit of 4.2 Mpixel; raise the limit with "
                                         r"--max-pixels") as e:
        read_image(path)
    one_line(str(e.value))
    # allowed by the caller, it fails as what it is: a PNG whose data is missing
    with pytest.raises(ImageError, match="huge.png") as e:
        read_image(path, max_pixels=None)
    assert "not an image file" not in str(e.value)


def test_pixel_limit_is_the_callers(tmp_path):
    from rclut_numba.imaging import ImageError, read_image
    path = tmp_path / "small.png"
    path.write_bytes(png_bytes(3, 2, rows=[b"\1\2\3"] * 2, colour=0))
    assert read_image(path).shape == (2, 3)
    with pytest.raises(ImageError, match=r"3x2 .*limit of 0.0 Mpixel"):
        read_image(path, max_pixels=5)
    assert read_image(path, max_pixels=6).shape == (2, 3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_pixels"):
            read_image(path, max_pixels=bad)


@pytest.mark.parametrize("fmt", ["jpg", "bmp", "tif", "webp", "gif"])
def test_pixel_limit_from_every_header(tmp_path, fmt):
    from PIL import Image

    from rclut_numba.imaging import ImageError, read_image
    path = tmp_path / f"a.{fmt}"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    assert read_image(path).shape[:2] == (30, 40)
    with pytest.raises(ImageError, match=r"image is 40x30 "):
        read_image(path, max_pixels=1199)


def test_decompression_bomb_png_bounded(tmp_path):
    path = tmp_path / "bomb.png"
    png_bomb(path, 12_000, 12_000)
    assert path.stat().st_size < 1_000_000
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(3, 2, rows=[b"\1\2\3"] * 2, colour=0))
    out = tmp_path / "out"
    out.mkdir()
    r = run_python(CLI, "upscale", str(path), str(good), "--out-dir", str(out), "--model",
                   str(_tiny_model(tmp_path)))
    assert r.rc == 1, r.err
    lines = r.err.splitlines()
    assert "bomb.png: image is 12000x12000 (144.0 Mpixel), more than the limit" in lines[0]
    assert "--max-pixels" in lines[0] and "Traceback" not in r.err
    assert r.peak_mb < 1000, r.peak_mb
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]  # the rest of the batch ran


def _tiny_model(tmp_path):
    from rclut_numba.bundle import save_bundle
    from rclut_numba.spec import ModelSpec
    from strategies import random_arrays
    path = tmp_path / "tiny.npz"
    if not path.exists():
        spec = ModelSpec.from_dict(SPEC)
        save_bundle(path, spec, random_arrays(spec, 0))
    return path


@pytest.mark.parametrize("colour, channels", [(0, 1), (4, 2), (2, 3), (6, 4)])
def test_16_bit_png_refused_in_every_layout(tmp_path, colour, channels):
    from rclut_numba.imaging import ImageError, read_image
    path = tmp_path / "deep.png"
    path.write_bytes(png_bytes(2, 1, depth=16, colour=colour, rows=[b"\x01\xff" * 2 * channels]))
    with pytest.raises(ImageError, match=r"16-bit samples \(PNG .*\) are not supported; only "
                                         r"8-bit images") as e:
        read_image(path)
    one_line(str(e.value))


@pytest.mark.parametrize("magic, channels", [(b"P5", 1), (b"P6", 3)])
def test_16_bit_pnm_refused(tmp_path, magic, channels):
    from rclut_numba.imaging import ImageError, read_image
    path = tmp_path / "deep.ppm"
    path.write_bytes(magic + b"\n# comment\n2 1\n65535\n" + b"\x01\xff" * 2 * channels)
    with pytest.raises(ImageError, match="16-bit samples"):
        read_image(path)


def test_16_bit_tiff_refused(tmp_path):
    from PIL import Image

    from rclut_numba.imaging import ImageError, read_image
    Image.fromarray(np.full((2, 3), 511, np.uint16)).save(tmp_path / "deep.tif")
    with pytest.raises(ImageError, match=r"16-bit samples \(TIFF\)"):
        read_image(tmp_path / "deep.tif")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
def test_special_files_as_inputs(tmp_path):
    from rclut_numba.imaging import ImageError, read_image
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for path, words in [(loop, "cannot read file (Too many levels of symbolic links)"),
                        (fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                        (tmp_path, "is a directory")]:
        with pytest.raises(ImageError, match=re.escape(words)) as e:
            read_image(path)  # refused at once: a FIFO is not waited on, /dev/zero not read
        one_line(str(e.value))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
def test_special_inputs_do_not_stop_a_batch(tmp_path):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(3, 2, rows=[b"\1\2\3"] * 2, colour=0))
    out = tmp_path / "out"
    out.mkdir()
    r = run_python(CLI, "upscale", str(loop), str(fifo), "/dev/zero", str(good), "--out-dir",
                   str(out), "--model", str(_tiny_model(tmp_path)), timeout=60)
    assert r.rc == 1 and "Traceback" not in r.err
    assert "3 of 4 inputs failed" in r.err.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_file_larger_than_any_image_within_the_limit(tmp_path):
    from rclut_numba.imaging import ImageError, read_image
    path = tmp_path / "big.png"
    with open(path, "wb") as f:
        f.write(png_bytes(3, 2, rows=[b"\1\2\3"] * 2, colour=0))
        f.truncate(20_000_000)  # sparse: nothing written to disk
    with pytest.raises(ImageError, match="file is 20 MB"):
        read_image(path, max_pixels=1000)

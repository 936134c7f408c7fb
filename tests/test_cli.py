"""The rclut command line, end to end, including every bad input it must survive."""
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import shared_path
from rclut_numba.bundle import save_bundle
from rclut_numba.cli import main
from rclut_numba.spec import ModelSpec, srlut
from strategies import random_arrays


@pytest.fixture
def small_model(tmp_path):
    s = srlut()
    spec = ModelSpec(s.name, 2, s.stages, interval=64)
    path = tmp_path / "m.npz"
    save_bundle(path, spec, random_arrays(spec, 0))
    return path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    d.mkdir()
    iio.imwrite(d / "rgb.png", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    iio.imwrite(d / "gray.png", rng.integers(0, 256, (5, 6), dtype=np.uint8))
    iio.imwrite(d / "rgba.png", rng.integers(0, 256, (4, 4, 4), dtype=np.uint8))
    (d / "text.png").write_text("not an image")
    good = (d / "rgb.png").read_bytes()
    (d / "cut.png").write_bytes(good[: len(good) // 2])
    return d


def test_upscale_writes_all_and_reports_failures(tmp_path, small_model, images, capsys):
    out = tmp_path / "out"
    out.mkdir()
    inputs = [str(images / n) for n in ("rgb.png", "text.png", "gray.png", "cut.png", "rgba.png")]
    rc = main(["upscale", *inputs, "--model", str(small_model), "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 of 5 inputs failed" in err and "text.png" in err and "cut.png" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["gray.png", "rgb.png", "rgba.png"]
    assert iio.imread(out / "rgb.png").shape == (18, 14, 3)
    assert iio.imread(out / "gray.png").shape == (10, 12)
    assert iio.imread(out / "rgba.png").shape == (8, 8, 4)


def test_upscale_refuses_overwrite_unless_forced(tmp_path, small_model, images, capsys):
    target = tmp_path / "o.png"
    target.write_bytes(b"precious")
    rc = main(["upscale", str(images / "gray.png"), "--model", str(small_model), "-o", str(target)])
    assert rc == 1 and "exists" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"
    rc = main(["upscale", str(images / "gray.png"), "--model", str(small_model), "-o", str(target),
               "--force"])
    assert rc == 0 and iio.imread(target).shape == (10, 12)


@pytest.mark.parametrize("args, msg", [
    (["upscale", "IN", "--out-dir", "/nonexistent/dir"], "does not exist"),
    (["upscale", "IN", "IN", "-o", "x.png"], "one input"),
    (["upscale", "IN", "--model", "/no/model.npz", "-o", "OUT/x.png"], "no such model"),
    (["upscale", "IN", "--threads", "0", "-o", "OUT/x.png"], "threads"),
    (["info", "/no/model.npz"], "no such model"),
    (["convert", "/no/luts", "-o", "OUT/x.npz"], "no such model"),
    (["eval", "/no/dataset", "--model", "MODEL"], "HR"),
    (["bench", "--size", "axb", "--model", "MODEL"], "--size"),
])
def test_bad_arguments_one_line_error(tmp_path, small_model, images, capsys, args, msg):
    args = [a.replace("IN", str(images / "gray.png")).replace("OUT", str(tmp_path))
            .replace("MODEL", str(small_model)) for a in args]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_output_into_missing_folder_leaves_nothing(tmp_path, small_model, images, capsys):
    rc = main(["upscale", str(images / "gray.png"), "--model", str(small_model),
               "-o", str(tmp_path / "missing" / "x.png")])
    assert rc == 1 and "exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_console_script_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "rclut_numba.cli", "upscale",
                        str(tmp_path / "absent.png"), "-o", str(tmp_path / "o.png"),
                        "--model", str(tmp_path / "none.npz")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.startswith("rclut: error:")


def test_convert_and_info(tmp_path, small_model, capsys):
    out = tmp_path / "copy.npz"
    assert main(["convert", str(small_model), "-o", str(out)]) == 0
    assert main(["convert", str(small_model), "-o", str(out)]) == 2  # exists
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SR-LUT: x2, interval 64" in text and "s1_b1_lut" in text


def test_default_model_error_or_runs(capsys):
    from rclut_numba.engine import DEFAULT_MODEL
    rc = main(["info"])
    if DEFAULT_MODEL.is_file():
        assert rc == 0
    else:
        assert rc == 2 and "no default model" in capsys.readouterr().err


# ---- the published MuLUT model: external ground truth --------------------------------------
def test_mulut_set5_bit_exact(tmp_path, capsys):
    luts = shared_path("mulut", "luts")
    lr_dir = shared_path("data", "benchmark", "Set5", "LR_bicubic", "X4")
    ref_dir = shared_path("mulut", "reference_outputs", "Set5", "X4")
    inputs = sorted(lr_dir.glob("*.png"))
    args = ["upscale", *map(str, inputs), "--model", str(luts), "--out-dir", str(tmp_path)]
    assert main(args) == 0
    for p in inputs:
        assert np.array_equal(iio.imread(tmp_path / p.name), iio.imread(ref_dir / p.name)), p.name


def test_mulut_set5_eval(capsys):
    luts = shared_path("mulut", "luts")
    data = shared_path("data", "benchmark", "Set5")
    assert main(["eval", str(data), "--model", str(luts)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"mean PSNR (\S+) SSIM (\S+)", last)
    assert m, last
    assert abs(float(m[1]) - 30.61) <= 0.005
    assert abs(float(m[2]) - 0.865) <= 0.001


@pytest.mark.parametrize("module, command, argv", [
    ("rclut_numba.cli", "cmd_info", ["info"]),
    ("training.cli", "_eval_network", ["eval-network", "--weights", "w", "--data", "d"]),
])
def test_closed_pipe_stops_quietly(module, command, argv):
    # `rclut info | head -1`: the reader leaves before the output ends. The stand-in command
    # writes far more than a pipe buffer holds, so a write really fails.
    if module.startswith("training"):
        pytest.importorskip("torch")
    code = (f"import sys, {module} as cli\n"
            "def chatty(args):\n"
            "    for i in range(100000): print('x' * 80)\n"
            "    return 0\n"
            f"cli.{command} = chatty\n"
            f"sys.exit(cli.main({argv!r}))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert err == ""

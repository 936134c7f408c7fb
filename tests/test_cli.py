"""The rclut command line, end to end, including every bad input it must survive."""
import io
import os
import re
import signal
import subprocess
import sys
import time

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
        out = capsys.readouterr().out
        assert re.search(r"flat field: flat grey moves by at most \d+ levels? .*of 256 levels", out)
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


# ---- batches: folders, -i/-o, outputs checked first --------------------------------------------
@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    iio.imwrite(d / "a.png", rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    iio.imwrite(d / "sub" / "b.png", rng.integers(0, 256, (3, 3), dtype=np.uint8))
    iio.imwrite(d / ".hidden.png", rng.integers(0, 256, (3, 3), dtype=np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_folder_input_not_recursive_unless_asked(tmp_path, small_model, folder, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["upscale", str(folder), "--out-dir", str(out), "--model", str(small_model)]) == 0
    assert listing(out) == ["a.png"]
    assert main(["upscale", "-i", str(folder), "-o", str(out), "-r", "--force",
                 "--model", str(small_model)]) == 0
    assert listing(out) == ["a.png", "sub/b.png"]
    assert iio.imread(out / "sub" / "b.png").shape == (6, 6)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(re.search(r" -> .*  \d+x\d+ -> \d+x\d+  [\d.]+ ms$", ln)
                                   for ln in lines)


def test_i_o_like_real_esrgan(tmp_path, small_model, images, capsys):
    # -i FILE -o FILE; -i A -i B -o EXISTING_FOLDER; -o with a folder input must be a folder
    assert main(["upscale", "-i", str(images / "gray.png"), "-o", str(tmp_path / "g.png"),
                 "--model", str(small_model)]) == 0
    out = tmp_path / "o"
    out.mkdir()
    assert main(["upscale", "-i", str(images / "gray.png"), "-i", str(images / "rgb.png"),
                 "-o", str(out), "--model", str(small_model)]) == 0
    assert listing(out) == ["gray.png", "rgb.png"]
    capsys.readouterr()
    assert main(["upscale", "-i", str(images), "-o", str(tmp_path / "nope.png"),
                 "--model", str(small_model)]) == 2
    err = capsys.readouterr().err.strip()
    assert "folder input need an existing output folder" in err and len(err.splitlines()) == 1
    assert main(["upscale", "--out-dir", str(out), "--model", str(small_model)]) == 2
    assert "no input" in capsys.readouterr().err


def test_gif_input_is_written_as_png(tmp_path, small_model, capsys):
    from PIL import Image
    src = tmp_path / "anim.gif"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(src)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["upscale", str(src), "--out-dir", str(out), "--model", str(small_model)]) == 0
    assert listing(out) == ["anim.png"]


@pytest.mark.parametrize("target, msg", [
    ("x.xyz", "unknown image extension '.xyz'"),
    ("missing/x.png", "does not exist"),
    ("loop.png", "Too many levels of symbolic links"),
    ("taken.png", "exists; use --force"),
])
def test_outputs_checked_before_the_model_loads(tmp_path, images, capsys, target, msg):
    (tmp_path / "taken.png").write_bytes(b"precious")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    # the model does not exist: an output error is found before the model would be loaded
    rc = main(["upscale", str(images / "gray.png"), "-o", str(tmp_path / target),
               "--model", str(tmp_path / "absent.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and msg in err[0] and "no such model" not in " ".join(err)
    assert (tmp_path / "taken.png").read_bytes() == b"precious"


def test_alpha_into_jpeg_refused_before_computing(tmp_path, small_model, images, capsys,
                                                  monkeypatch):
    from rclut_numba.engine import LutModel
    calls = []
    monkeypatch.setattr(LutModel, "upscale", lambda self, im, **kw: calls.append(im.shape))
    rc = main(["upscale", str(images / "rgba.png"), "-o", str(tmp_path / "x.jpg"),
               "--model", str(small_model)])
    assert rc == 1 and "cannot store an alpha channel" in capsys.readouterr().err
    assert calls == []


def test_kernels_warmed_before_the_timed_upscale(tmp_path, small_model, images, monkeypatch):
    from rclut_numba.engine import LutModel
    calls = []
    real = LutModel.upscale

    def recording(self, image, **kw):
        calls.append(image.shape)
        return real(self, image, **kw)

    monkeypatch.setattr(LutModel, "upscale", recording)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(images / n) for n in ("rgb.png", "gray.png", "rgba.png")]
    assert main(["upscale", *args, "--out-dir", str(out), "--model", str(small_model)]) == 0
    # one tiny warm-up per set of kernels (gray and RGB share theirs), before the first image
    # that needs it
    assert calls == [(8, 8), (9, 7, 3), (5, 6), (8, 8, 4), (4, 4, 4)]
    calls.clear()
    assert main(["upscale", args[0], "--out-dir", str(out), "--model", str(small_model),
                 "--luma-only", "--force"]) == 0
    assert calls == [(8, 8, 3), (9, 7, 3)]  # luma-only RGB has kernels of its own


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(tmp_path, small_model, images, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    args = ["upscale", str(images / "rgb.png"), str(images / "gray.png"), "--out-dir", str(out),
            "--model", str(small_model)]
    assert main(args) == 0
    assert "\r" not in capsys.readouterr().err
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main([*args, "--force"]) == 0
    err = tty.getvalue()
    assert "\r[" in err and "0/2 rgb.png" in err and "1/2 gray.png" in err
    assert err.endswith("\r\033[K")  # the bar is cleared at the end


def test_eval_progress_bar(tmp_path, small_model, monkeypatch, capsys):
    hr = tmp_path / "set" / "HR"
    hr.mkdir(parents=True)
    for name in ("a", "b"):
        iio.imwrite(hr / f"{name}.png", np.full((24, 24), 100, np.uint8))
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["eval", str(tmp_path / "set"), "--model", str(small_model)]) == 0
    assert "0/2 a" in tty.getvalue() and "1/2 b" in tty.getvalue()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a  PSNR ") and lines[-1].startswith("mean PSNR ")
    assert "inf" not in " ".join(lines)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert re.fullmatch(r"rclut \d+\.\d+\.\d+ \(numba \S+, numpy \S+\)\n", capsys.readouterr().out)


@pytest.mark.parametrize("args, msg", [
    (["bench", "--repeat", "0"], "--repeat must be at least 1, got 0"),
    (["bench", "--size", "30000x30000"], "--size 30000x30000 is 30000x30000 (900.0 Mpixel), more "
                                         "than the limit of 4.2 Mpixel; raise the limit with "
                                         "--max-pixels"),
    (["bench", "--size", "0x5"], "must be positive"),
])
def test_bench_refusals(tmp_path, capsys, args, msg):
    # refused before the model loads: the absent model is never reached
    assert main([*args, "--model", str(tmp_path / "absent.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


# ---- whole processes: closed stdout, SIGTERM, first-run compilation --------------------------
def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "rclut_numba.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600, **kw)


def test_closed_stdout_is_not_a_failure(tmp_path, small_model, images):
    # `rclut upscale ... | head -0`: the reader is gone before the first line
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "rclut_numba.cli", "upscale",
                          str(images / "rgb.png"), str(images / "gray.png"), "--out-dir", str(out),
                          "--model", str(small_model)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert err == ""
    assert listing(out) == ["gray.png", "rgb.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_while_writing_leaves_no_temp_file(tmp_path, small_model, images):
    out = tmp_path / "out"
    out.mkdir()
    ready = tmp_path / "ready"
    code = ("import sys, time\n"
            "import rclut_numba.imaging as imaging\n"
            "from rclut_numba.cli import main\n"
            "def slow(fh, *a, **k):\n"
            "    fh.write(b'x' * 1000000)\n"
            "    open(sys.argv[1], 'w').close()\n"
            "    time.sleep(60)\n"
            "imaging.iio.imwrite = slow\n"
            "sys.exit(main(sys.argv[2:]))\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(ready), "upscale",
                          str(images / "gray.png"), "--out-dir", str(out), "--model",
                          str(small_model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for _ in range(1200):
        if ready.exists() or p.poll() is not None:
            break
        time.sleep(0.05)
    assert ready.exists(), p.communicate()
    assert [f.name for f in out.iterdir()][0].endswith(".tmp")  # caught mid-write
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143
    assert err.strip() == "rclut: terminated"
    assert list(out.iterdir()) == []


def test_first_run_says_it_compiles(tmp_path, small_model, images):
    # an empty numba cache: the first run compiles and says so once, with how long it took
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    first = _cli("upscale", images / "gray.png", "-o", tmp_path / "a.png", "--model", small_model,
                 env=env)
    assert first.returncode == 0, first.stderr
    err = first.stderr.strip()
    assert re.fullmatch(r"rclut: compiling the numba kernels \(first run only; later runs load "
                        r"them from the cache\)(\.\.\. done in|: took) \d+\.\d s", err), err
    assert re.search(r"  [\d.]+ ms$", first.stdout.strip())
    second = _cli("upscale", images / "gray.png", "-o", tmp_path / "b.png", "--model", small_model,
                  env=env)
    assert second.returncode == 0 and second.stderr == ""

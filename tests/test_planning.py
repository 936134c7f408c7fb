"""``rclut bench``'s planning figures: frame sizes, the table, the 4K memory measurement."""
import re
import subprocess
import sys

import numpy as np
import pytest

from rclut_numba.bundle import save_bundle
from rclut_numba.planning import input_size, peak_memory_mb, synthetic_image
from rclut_numba.spec import ModelSpec, srlut
from strategies import random_arrays


@pytest.fixture
def small_model(tmp_path):
    spec = ModelSpec("SR-LUT", 2, srlut().stages, interval=64)
    path = tmp_path / "m.npz"
    save_bundle(path, spec, random_arrays(spec, 0))
    return path


@pytest.mark.parametrize("scale, expected", [(4, (320, 180)), (2, (640, 360)), (3, (427, 240))])
def test_the_input_covers_the_output_frame(scale, expected):
    assert input_size(1280, 720, scale) == expected


def test_synthetic_image_is_photo_like_uint8():
    image = synthetic_image(40, 30)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert 20 < image.std() < 80  # neither flat nor saturated noise


def test_peak_memory_grows_with_the_output(small_model):
    peak_small, added_small = peak_memory_mb([f"--model={small_model}"], 64, 36)
    peak_big, added_big = peak_memory_mb([f"--model={small_model}"], 960, 540)
    assert 20 < peak_small < peak_big  # a Python process with numpy and numba loaded
    # the x2 output alone is 1920 x 1080 x 3 bytes (5.9 MB); pages the process freed before
    # (still resident) may hold part of it, so only half of it must show as added
    output_mb = 1920 * 1080 * 3 / 2 ** 20
    assert added_big > output_mb / 2 > added_small


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "rclut_numba.cli", "bench", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_bench_prints_frame_times_and_4k_memory(small_model):
    done = _bench("--model", small_model, "--repeat", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("SR-LUT x2 (") and "medians of 1 runs" in lines[0]
    assert lines[2] == "| output frame | input | 1 thread ms |"
    assert re.fullmatch(r"\| 720p \(1280x720\) \| 640x360 \| [\d.]+ \|", lines[4])
    assert re.fullmatch(r"\| 1080p \(1920x1080\) \| 960x540 \| [\d.]+ \|", lines[5])
    assert re.fullmatch(r"peak memory, 4K output \(1920x1080 -> 3840x2160\): \d+ MB resident, "
                        r"whole process \(\d+ MB of it added by the upscale\)", lines[-1])


def test_bench_one_size_and_no_memory(small_model):
    done = _bench("--model", small_model, "--repeat", "2", "--size", "40x30")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"SR-LUT: 40x30 RGB -> 80x60: median [\d.]+ ms, best [\d.]+ ms over 2 "
                        r"runs", done.stdout.strip())
    done = _bench("--model", small_model, "--repeat", "1", "--no-memory")
    assert done.returncode == 0, done.stderr
    assert "peak memory" not in done.stdout
    assert _bench("--model", small_model, "--repeat", "0").returncode == 2

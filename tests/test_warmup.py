"""``rclut warmup``: after it, no command on any image layout compiles anything.

Each case starts from an empty numba cache (``NUMBA_CACHE_DIR``), so it compiles for real.
"""
import os
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from rclut_numba.bundle import save_bundle
from rclut_numba.spec import Branch, ModelSpec, Stage, srlut
from strategies import random_arrays

MODELS = {
    # one stage (per-stage kernels; SR-LUT's layout, so its own arithmetic is warmed too)
    "srlut-x2": ModelSpec("SR-LUT", 2, srlut().stages, interval=64),
    # two stages with RC windows (the fused kernel)
    "rc-x3": ModelSpec("rc-like", 3, (Stage((Branch("S", 3), Branch("1", 1))),
                                      Stage((Branch("1", 3), Branch("D")))),
                       interval=128, residual=True),
}


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "rclut_numba.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize("name", MODELS)
def test_after_warmup_nothing_compiles(tmp_path, name):
    spec = MODELS[name]
    model = tmp_path / "m.npz"
    save_bundle(model, spec, random_arrays(spec, 0))
    rng = np.random.default_rng(1)
    images = tmp_path / "in"
    images.mkdir()
    iio.imwrite(images / "rgb.png", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    iio.imwrite(images / "gray.png", rng.integers(0, 256, (5, 6), dtype=np.uint8))
    iio.imwrite(images / "rgba.png", rng.integers(0, 256, (4, 4, 4), dtype=np.uint8))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    first = _cli("warmup", "--model", model, env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert re.fullmatch(rf".* x{spec.scale} \(.*m\.npz\): \d+ functions compiled, [\d.]+ s",
                        lines[0]), lines
    assert lines[1] == f"numba cache: {tmp_path / 'cache'}" or lines[1].startswith(
        f"numba cache: {tmp_path / 'cache'}{os.sep}")

    out = tmp_path / "out"
    out.mkdir()
    for extra in ([], ["--luma-only"]):
        run = _cli("upscale", images, "--out-dir", out, "--model", model, "--force", *extra,
                   env=env)
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""  # no "compiling the numba kernels" note
    second = _cli("warmup", "--model", model, env=env)
    assert second.returncode == 0, second.stderr
    assert ": all from the cache, " in second.stdout

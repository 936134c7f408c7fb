"""Planning figures under emulated aarch64, each beside the same figure on x86 from the same run.

Runs ``rclut bench`` (ms per output frame, median) and a whole-process ``rclut upscale`` to a 4K
output (peak RSS) with both interpreters of ``make test-arm``, workload by workload, so both
sides see the same machine load. Emulation (qemu-user on x86) says nothing about a real ARM
core's speed: only the ratios between workloads carry over, not the milliseconds.

    python scripts/arm/bench_arm.py [--repeat 5] [--model PATH]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from arm_env import SetupError, ensure_env  # noqa: E402

MEDIAN = re.compile(r"median ([0-9.]+) ms")
# (output frame, LR size for x4) as `rclut bench --size` takes it
FRAMES = (("720p", "320x180"), ("1080p", "480x270"))


def run_measured(cmd: list[str], env: dict) -> tuple[str, float, int]:
    """(stdout + stderr, wall seconds, peak RSS in MB of the whole process) of one command."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-8:])} failed ({proc.returncode}): {text[-500:]}")
    return text, time.perf_counter() - t0, usage.ru_maxrss // 1024


def photo_like(h: int, w: int) -> np.ndarray:
    """The synthetic frame `rclut bench` times: smooth content with some texture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--model", help="model for every workload (default: the embedded one)")
    args = p.parse_args(argv)
    try:
        arm = ensure_env()
    except SetupError as e:
        print(f"bench-arm: setup failed: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-arm-") as tmp_name:
        tmp = Path(tmp_name)
        # a copy of the package: edits to the tree during the run cannot invalidate numba's
        # cache, and a fresh path with empty caches makes the first run a true cold start
        shutil.copytree(REPO / "rclut_numba", tmp / "rclut_numba",
                        ignore=shutil.ignore_patterns("__pycache__"))
        x86_env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHON"))}
        x86_env.update(PYTHONPATH=str(tmp), NUMBA_CACHE_DIR=str(tmp / "numba-x86"))
        # compiled for a Raspberry Pi 5's core, as `make test-arm` does
        arm_env = arm.environ(tmp, NUMBA_CACHE_DIR=str(tmp / "numba-arm"),
                              NUMBA_CPU_NAME="cortex-a76")
        sides = {"x86_64": ([sys.executable], x86_env),
                 "aarch64 (emulated)": (arm.command(), arm_env)}
        model = ["--model", args.model] if args.model else []
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        print("| workload | x86 | emulated aarch64 | aarch64 / x86 |")
        print("|---|---|---|---|")

        sample = REPO / "rclut_numba" / "samples" / "astronaut_lr.png"
        upscale = ["-m", "rclut_numba.cli", "upscale", str(sample), "-o",
                   str(tmp / "sample_x4.png"), "--force", *model]
        first = {}
        for run in ("cold", "warm"):
            for side, (python, env) in sides.items():
                _, seconds, _ = run_measured([*python, *upscale], env)
                first[side, run] = seconds
        for run in ("cold", "warm"):
            x86, emu = first["x86_64", run], first["aarch64 (emulated)", run]
            print(f"| `rclut upscale` of the sample, {run} numba cache, whole process s | "
                  f"{x86:.2f} | {emu:.1f} | {emu / x86:.0f}x |")
        x86, emu = (first[s, "cold"] / first[s, "warm"] for s in sides)
        print(f"| cold / warm | {x86:.1f}x | {emu:.1f}x | |", flush=True)

        for frame, size in FRAMES:
            for threads in (1, 2):
                ms = {}
                for side, (python, env) in sides.items():
                    cmd = [*python, "-m", "rclut_numba.cli", "bench", "--size", size,
                           "--threads", str(threads), "--repeat", str(args.repeat), *model]
                    text, _, _ = run_measured(cmd, env)
                    found = MEDIAN.search(text)
                    if not found:
                        raise RuntimeError(f"no 'median N ms' in rclut bench's output: {text}")
                    ms[side] = float(found.group(1))
                x86, emu = ms.values()
                print(f"| {frame} RGB output frame ({size} in), {threads} thread"
                      f"{'s' if threads > 1 else ''}, ms | {x86:.1f} | {emu:.0f} | "
                      f"{emu / x86:.0f}x |", flush=True)

        import imageio.v3 as iio
        src = tmp / "in_960x540.png"
        iio.imwrite(src, photo_like(540, 960))
        rows = {}
        for side, (python, env) in sides.items():
            cmd = [*python, "-m", "rclut_numba.cli", "upscale", str(src), "-o",
                   str(tmp / "out_4k.png"), "--force", "--threads", "2", *model]
            _, seconds, rss = run_measured(cmd, env)
            rows[side] = (seconds, rss)
        (xs, xr), (es, er) = rows.values()
        print(f"| 4K output (960x540 -> 3840x2160 RGB, 2 threads), whole process peak RSS MB | "
              f"{xr} | {er} | {er / xr:.2f}x |")
        print(f"| same, whole process s | {xs:.1f} | {es:.1f} | {es / xs:.0f}x |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

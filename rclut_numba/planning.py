"""Figures a device owner can plan with (``rclut bench``): ms per output frame at 720p and
1080p, 1 and 2 threads, and the peak memory of a process that writes a 4K frame.

Frames are sized by their output: the input is the output divided by the model's scale
(rounded up, so a x3 model's "720p" is 1281x720).  The input is synthetic, smooth with some
texture (the engine's speed does not depend on content).  Times are medians, the thread counts
interleaved run by run so a drifting machine slows both alike.  Peak memory is measured in a
fresh process (``python -m rclut_numba.planning``), whose kernels come from numba's cache, as
the peak resident set (Linux ``VmHWM``, else ``ru_maxrss``): the whole process (Python, numpy,
numba, the model) and, apart, what the upscale added to what the process held before it.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import numpy as np

FRAMES = (("720p", 1280, 720), ("1080p", 1920, 1080))
MEMORY_FRAME = ("4K", 3840, 2160)


def synthetic_image(width: int, height: int, channels: int = 3) -> np.ndarray:
    """A uint8 photo-like test image: smooth waves plus noise (closer to photos than noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    return np.clip(base + rng.normal(0, 12, (height, width, channels)), 0, 255).astype(np.uint8)


def input_size(out_w: int, out_h: int, scale: int) -> tuple[int, int]:
    """The input (W, H) whose upscale covers an output of ``out_w`` x ``out_h``."""
    return math.ceil(out_w / scale), math.ceil(out_h / scale)


def frame_ms(model, image: np.ndarray, threads: list[int], repeat: int,
             luma_only: bool = False) -> dict[int, tuple[float, float]]:
    """(median, best) ms of ``model.upscale(image)`` at each thread count, after one untimed
    run at each."""
    times: dict[int, list[float]] = {t: [] for t in threads}
    for t in threads:
        model.upscale(image, threads=t, luma_only=luma_only)
    for _ in range(repeat):
        for t in threads:
            t0 = time.perf_counter()
            model.upscale(image, threads=t, luma_only=luma_only)
            times[t].append(time.perf_counter() - t0)
    return {t: (1000 * float(np.median(v)), 1000 * min(v)) for t, v in times.items()}


def peak_rss_kb() -> int:
    """This process's peak resident set in KB: ``VmHWM`` where Linux has it (``ru_maxrss``
    can include pages of the parent from before ``exec``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes


def cpu_name() -> str:
    """The CPU's model name where Linux tells it, else what ``platform`` knows."""
    import platform
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return peak_rss_kb()


def peak_memory_mb(model_args: list[str], width: int, height: int,
                   luma_only: bool = False) -> tuple[float, float]:
    """(peak MB of the whole process, MB the upscale added) for one upscale of a
    ``width`` x ``height`` RGB input in a fresh process; ``model_args`` choose the model as
    this module's command line does (``--model``, ``--scale``, ``--arithmetic``)."""
    command = [sys.executable, "-m", "rclut_numba.planning", "--size", f"{width}x{height}",
               *model_args, *(["--luma-only"] if luma_only else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the memory measurement failed: {done.stderr.strip()}")
    kb = json.loads(done.stdout)
    return kb["peak_kb"] / 1024, (kb["peak_kb"] - kb["before_kb"]) / 1024


def _measure_memory() -> None:
    """Child process of :func:`peak_memory_mb`: prints {"before_kb", "peak_kb"} as JSON."""
    from .engine import load_model
    p = argparse.ArgumentParser()
    p.add_argument("--size", required=True)
    p.add_argument("--model")
    p.add_argument("--scale", type=int)
    p.add_argument("--arithmetic")
    p.add_argument("--luma-only", action="store_true")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    model = load_model(args.model, scale=args.scale, arithmetic=args.arithmetic)
    image = synthetic_image(w, h)
    model.upscale(image[:8, :8], luma_only=args.luma_only)  # kernels loaded before measuring
    before = _rss_kb()
    model.upscale(image, luma_only=args.luma_only)
    print(json.dumps({"before_kb": before, "peak_kb": peak_rss_kb()}))


if __name__ == "__main__":
    _measure_memory()

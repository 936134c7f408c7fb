"""Engine speed and memory, side by side with named anchors, in one run.

    python benchmarks/bench_engine.py [--model PATH] [--repeat N]

Input: scikit-image's CC0 ``coffee`` photo (natural content, licence-clean), cropped to 16:9 and
resized to 320x180 with the project's MATLAB-style bicubic.  Rows: the LUT model at 1 and 2
threads, luma-only, and the anchor Pillow bicubic on the same input; then the peak resident
memory of a 960x540 -> 3840x2160 RGB upscale, measured in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rclut_numba import load_model  # noqa: E402
from rclut_numba.bicubic import imresize  # noqa: E402

SHARED_MULUT = ROOT.parent / "shared" / "mulut" / "luts"


def natural_image(width: int, height: int) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        sys.exit("bench_engine: needs scikit-image for its CC0 test photo (pip install scikit-image)")
    photo = data.coffee()  # 400 x 600
    crop_h = round(photo.shape[1] * 9 / 16)
    top = (photo.shape[0] - crop_h) // 2
    return imresize(np.ascontiguousarray(photo[top:top + crop_h]), output_shape=(height, width))


def best_ms(fn, repeat: int) -> float:
    fn()  # compile, warm caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def peak_rss_child(model_path: str) -> None:
    """Runs in a fresh process: one 960x540 -> 4K upscale, then report ru_maxrss."""
    model = load_model(model_path)
    image = natural_image(960, 540)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = model.upscale(image)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": peak / 1024, "before_mb": before / 1024, "seconds": seconds,
                      "shape": list(out.shape)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="model to time (default: the published MuLUT LUTs in ../shared, else the embedded model)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    model_path = args.model or (str(SHARED_MULUT) if SHARED_MULUT.is_dir() else None)
    if args.rss_child:
        peak_rss_child(model_path)
        return
    model = load_model(model_path)
    image = natural_image(320, 180)
    s = model.scale
    from PIL import Image
    pil = Image.fromarray(image)

    rows = [
        (f"{model.spec.name} RGB, 1 thread", best_ms(lambda: model.upscale(image, threads=1), args.repeat)),
        (f"{model.spec.name} RGB, 2 threads", best_ms(lambda: model.upscale(image, threads=2), args.repeat)),
        (f"{model.spec.name} luma-only, 2 threads",
         best_ms(lambda: model.upscale(image, threads=2, luma_only=True), args.repeat)),
        ("Pillow bicubic (anchor)", best_ms(lambda: pil.resize((320 * s, 180 * s), Image.BICUBIC), args.repeat)),
    ]
    anchor = rows[-1][1]
    print(f"model: {model.source} ({model.spec.describe()})")
    print(f"input: coffee (CC0), 320x180 RGB -> {320 * s}x{180 * s}; median of {args.repeat} runs")
    print(f"{'':42s} {'ms':>8s} {'x Pillow bicubic':>17s}")
    for name, ms in rows:
        print(f"{name:42s} {ms:8.1f} {ms / anchor:17.1f}")
    child = subprocess.run([sys.executable, __file__, "--rss-child"] + (["--model", model_path] if model_path else []),
                           capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"bench_engine: the memory run failed: {child.stderr.strip().splitlines()[-1:]}")
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"960x540 -> {r['shape'][1]}x{r['shape'][0]} RGB: peak RSS {r['peak_mb']:.0f} MB "
          f"({r['before_mb']:.0f} MB before the upscale: interpreter, numba, model), {r['seconds']:.2f} s")


if __name__ == "__main__":
    main()

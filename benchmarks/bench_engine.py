"""Engine speed and memory, side by side with named anchors, in one run.

    python benchmarks/bench_engine.py [--model PATH ...] [--repeat N] [--callgrind] [--no-rss]

Input: scikit-image's CC0 ``coffee`` photo (natural content, licence-clean), cropped to 16:9 and
resized to 320x180 with the project's MATLAB-style bicubic.  Models: the published MuLUT LUTs in
``../shared`` (when present) and the embedded default RC-LUT, or those given with ``--model``.

Printed, all from one run:

* every model RGB and luma-only at 1 and 2 threads, and the anchor Pillow bicubic on the same
  input; the cases are interleaved repetition by repetition (the machine is shared and its speed
  drifts), each timed run follows an untimed one of the same case, each figure is a median and
  its ratio is to Pillow's median in the same run;
* where each of those runs spends its time (engine sections, see ``rclut_numba.engine.profile``):
  RC windows, LUT stage 1, LUT stage 2, padding and copies, colour (luma-only);
* with ``--callgrind``: instructions per LR pixel (RGB, all three channels) counted by valgrind's
  callgrind as the difference between a run of 3 upscales and a run of 1 (no machine noise).
  valgrind 3.19 cannot execute AVX-512, so these processes compile the kernels for x86-64-v3
  (AVX2): the counts are of that build, not of the AVX-512 code timed above;
* the peak resident memory of a 960x540 -> 3840x2160 RGB upscale, measured in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rclut_numba import engine, load_model
from rclut_numba.bicubic import imresize
from rclut_numba.planning import peak_rss_kb

ROOT = Path(__file__).resolve().parents[1]
SHARED_MULUT = ROOT.parent / "shared" / "mulut" / "luts"
SECTIONS = ("rc", "stage1", "stage2", "copies", "colour")
SECTION_NAMES = {"rc": "RC win", "stage1": "LUT 1", "stage2": "LUT 2", "copies": "pad/copy",
                 "colour": "colour"}
LR = (320, 180)


def natural_image(width: int, height: int) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        sys.exit("bench_engine: needs scikit-image for its CC0 test photo "
                 "(pip install scikit-image)")
    photo = data.coffee()  # 400 x 600
    crop_h = round(photo.shape[1] * 9 / 16)
    top = (photo.shape[0] - crop_h) // 2
    return imresize(np.ascontiguousarray(photo[top:top + crop_h]), output_shape=(height, width))


def default_models() -> list[str | None]:
    return ([str(SHARED_MULUT)] if SHARED_MULUT.is_dir() else []) + [None]  # None: embedded


def short_name(model) -> str:
    return model.spec.name.split(" ")[0]


def model_labels(models, paths) -> list[str]:
    """Each model's short name, with its file name where two models share one (two RC-LUTs)."""
    names = [short_name(m) for m in models]
    return [f"{n} [{Path(p).stem if p else 'embedded'}]" if names.count(n) > 1 else n
            for n, p in zip(names, paths, strict=True)]


# ---- child processes -----------------------------------------------------------------------
def peak_rss_child(model_path: str | None) -> None:
    """Runs in a fresh process: one 960x540 -> 4K upscale, then report the peak RSS."""
    model = load_model(model_path)
    image = natural_image(960, 540)
    before = peak_rss_kb()
    t0 = time.perf_counter()
    out = model.upscale(image)
    seconds = time.perf_counter() - t0
    peak = peak_rss_kb()
    print(json.dumps({"peak_mb": peak / 1024, "before_mb": before / 1024, "seconds": seconds,
                      "shape": list(out.shape)}))


def count_child(model_path: str | None, count: int) -> None:
    """Runs under callgrind: a warm-up upscale at 1 thread, then ``count`` more."""
    image = natural_image(*LR)
    if model_path == "pillow":
        from PIL import Image
        pil = Image.fromarray(image)

        def run():
            return pil.resize((LR[0] * 4, LR[1] * 4), Image.BICUBIC)
    else:
        model = load_model(model_path)

        def run():
            return model.upscale(image, threads=1)
    for _ in range(1 + count):
        run()


def instructions_per_pixel(model_path: str | None) -> float | None:
    """(Ir of 3 upscales - Ir of 1) / 2 / LR pixels, from two callgrind runs."""
    env = dict(os.environ, NUMBA_CPU_NAME="x86-64-v3", NUMBA_CPU_FEATURES="")
    base = [sys.executable, __file__, "--count-child"]
    base += ["--model", model_path] if model_path else []
    # compile and cache the v3 build natively
    subprocess.run(base + ["--count", "0"], env=env, check=True)
    counts = []
    for n in (1, 3):
        r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + base
                           + ["--count", str(n)], env=env, capture_output=True, text=True)
        m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
        if r.returncode != 0 or not m:
            print(f"  callgrind failed for {model_path}: {r.stderr.strip().splitlines()[-1:]}")
            return None
        counts.append(int(m[1]))
    return (counts[1] - counts[0]) / 2 / (LR[0] * LR[1])


# ---- the timed table -------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="model to time (repeatable; default: the published MuLUT LUTs in "
                         "../shared and the embedded RC-LUT)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--callgrind", action="store_true",
                    help="also count instructions with valgrind")
    ap.add_argument("--no-rss", action="store_true", help="skip the 4K peak-memory runs")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--count-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        peak_rss_child(args.model[0] if args.model else None)
        return
    if args.count_child:
        count_child(args.model[0] if args.model else None, args.count)
        return
    paths = args.model or default_models()
    models = [load_model(p) for p in paths]
    image = natural_image(*LR)
    from PIL import Image
    pil = Image.fromarray(image)
    s = models[0].scale

    names = model_labels(models, paths)
    cases = []  # (label, model index or None, function)
    for mi, model in enumerate(models):
        for luma in (False, True):
            for threads in (1, 2):
                kind = "luma-only" if luma else "RGB"
                label = f"{names[mi]} {kind}, {threads} thread{'s' * (threads > 1)}"
                cases.append((label, mi, lambda m=model, t=threads, y=luma:
                              m.upscale(image, threads=t, luma_only=y)))
    cases.append(("Pillow bicubic (anchor)", None,
                  lambda: pil.resize((LR[0] * s, LR[1] * s), Image.BICUBIC)))

    for _, _, fn in cases:  # compile, warm caches
        fn()
        with engine.profile():
            fn()
    times = {label: [] for label, _, _ in cases}
    staged = {label: [] for label, _, _ in cases}
    sections = {label: {k: [] for k in SECTIONS} for label, _, _ in cases}
    for _ in range(args.repeat):
        for label, mi, fn in cases:
            fn()  # untimed: lets the threads settle after the previous case's thread count
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
            if mi is None:
                continue
            with engine.profile() as prof:  # one launch per stage, each section timed
                t0 = time.perf_counter()
                fn()
                staged[label].append(time.perf_counter() - t0)
            for k in SECTIONS:
                sections[label][k].append(prof.get(k, 0.0))
    med = {label: 1000 * float(np.median(v)) for label, v in times.items()}
    anchor = med["Pillow bicubic (anchor)"]

    for model in models:
        print(f"model: {model.source} ({model.spec.describe()})")
    print(f"input: coffee (CC0), {LR[0]}x{LR[1]} RGB -> {LR[0] * s}x{LR[1] * s}; median of "
          f"{args.repeat} interleaved runs (ms). 'ms' is the engine as shipped (two-stage models "
          f"in one launch); the breakdown is of profiled runs with one launch per stage, whose "
          f"total is 'staged'")
    head = " ".join(f"{SECTION_NAMES[k]:>8s}" for k in SECTIONS)
    print(f"{'':40s} {'ms':>7s} {'x Pillow':>8s} | {'staged':>7s} {head}")
    for label, mi, _ in cases:
        if mi is None:
            print(f"{label:40s} {med[label]:7.1f} {1.0:8.2f} |")
            continue
        parts = " ".join(f"{1000 * float(np.median(sections[label][k])):8.1f}" for k in SECTIONS)
        print(f"{label:40s} {med[label]:7.1f} {med[label] / anchor:8.2f} | "
              f"{1000 * float(np.median(staged[label])):7.1f} {parts}")
    print(f"load average while timing: {os.getloadavg()[0]:.2f} (2 cores)")

    if args.callgrind:
        print("instructions per LR pixel (callgrind, 1 thread, RGB = 3 channels, x86-64-v3 "
              "build):")
        for path, name in zip(paths + ["pillow"], names + [None], strict=True):
            n = instructions_per_pixel(path)
            name = "Pillow bicubic" if name is None else f"{name} RGB"
            print(f"  {name:30s} {n:10.0f}" if n is not None else f"  {name:30s} n/a")

    if not args.no_rss:
        for path, name in zip(paths, names, strict=True):
            child = subprocess.run([sys.executable, __file__, "--rss-child"]
                                   + (["--model", path] if path else []),
                                   capture_output=True, text=True)
            if child.returncode != 0:
                last = child.stderr.strip().splitlines()[-1:]
                sys.exit(f"bench_engine: the memory run failed: {last}")
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{name} 960x540 -> {r['shape'][1]}x{r['shape'][0]} RGB: peak RSS "
                  f"{r['peak_mb']:.0f} MB ({r['before_mb']:.0f} MB before the upscale: "
                  f"interpreter, numba, model), {r['seconds']:.2f} s")


if __name__ == "__main__":
    main()

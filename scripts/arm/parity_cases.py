"""Upscale a fixed set of small inputs with every model and write the sha256 of each output.

Run by both interpreters of ``make test-arm`` (x86 and emulated aarch64) on the same working tree;
``test_arm.py`` compares the two files. Needs numpy, imageio and rclut_numba only. The inputs are
crops of the bundled sample, kept small because every call under emulation is slow; the first
call of each case also pays numba's compilation, timed separately from a second (warm) call.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numba
import numpy as np

import rclut_numba
from rclut_numba.engine import DEFAULT_MODEL

SAMPLE = Path(rclut_numba.__file__).with_name("samples") / "astronaut_lr.png"


def make_inputs() -> dict[str, np.ndarray]:
    sample = iio.imread(SAMPLE)[..., :3]
    yy, xx = np.mgrid[0:27, 0:33]
    alpha = ((xx * 7 + yy * 13) % 256).astype(np.uint8)  # every level class: edges and flats
    return {
        "rgb_48x48": np.ascontiguousarray(sample[:48, :48]),
        "grey_37x29": np.ascontiguousarray(sample[48:77, 11:48, 1]),  # odd sizes, one plane
        "rgba_33x27": np.dstack([sample[90:117, 70:103], alpha]),
    }


def list_models(shared: Path | None) -> list[tuple[str, Path | None, dict, str | None]]:
    """(label, path, load_model options, reason skipped) for every model the run covers."""
    models = [(f"embedded/{p.name}", p, {}, None)
              for p in sorted(DEFAULT_MODEL.parent.glob("*.npz"))]
    if shared is None or not shared.is_dir():
        why = f"shared folder {shared} absent"
        return models + [("mulut/luts", None, {}, why),
                         ("srlut/Model_S_x4_4bit_int8.npy", None, {}, why)]
    mulut = shared / "mulut" / "luts"
    models.append(("mulut/luts", mulut, {}, None if mulut.is_dir() else f"{mulut} absent"))
    srluts = sorted((shared / "srlut").glob("Model_S_x*_4bit_int8.npy"))
    if not srluts:
        models.append(("srlut/Model_S_x4_4bit_int8.npy", None, {}, f"no SR-LUT in {shared}/srlut"))
    # SR-LUT's LUTs run in SR-LUT's own (float) arithmetic by default; the project's integer
    # arithmetic on the same tables is covered once
    models += [(f"srlut/{p.name}", p, {}, None) for p in srluts]
    models += [(f"srlut/{p.name} integer", p, {"arithmetic": "integer"}, None)
               for p in srluts if p.name == "Model_S_x4_4bit_int8.npy"]
    return models


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def run_cases(shared: Path | None, warm: bool) -> list[dict]:
    inputs = make_inputs()
    # (suffix, input, upscale options): RGB and grey through the LUT kernels, luma-only and
    # alpha through the float colour / bicubic paths, one thread against the default count,
    # small tiles through the stage-by-stage kernels that large images take
    variants = [("rgb", "rgb_48x48", {}), ("rgb-1thread", "rgb_48x48", {"threads": 1}),
                ("rgb-tiles-20", "rgb_48x48", {"tile": 20}),
                ("rgb-luma-only", "rgb_48x48", {"luma_only": True}),
                ("grey", "grey_37x29", {}), ("rgba", "rgba_33x27", {})]
    cases = []
    for label, path, load_options, skipped in list_models(shared):
        if skipped:
            cases.append({"case": label, "skipped": skipped})
            continue
        try:
            model = rclut_numba.load_model(path, **load_options)
        except (ValueError, OSError) as e:  # BundleError / SpecError are ValueErrors
            cases.append({"case": label, "skipped": f"does not load: {e}"})
            continue
        for suffix, name, options in variants:
            image = inputs[name]
            t0 = time.perf_counter()
            out = model.upscale(image, **options)
            first = time.perf_counter() - t0
            case = {"case": f"{label} {suffix}", "input": name, "input_sha256": digest(image),
                    "shape": list(out.shape), "dtype": str(out.dtype), "sha256": digest(out),
                    "first_s": round(first, 3)}
            if warm:
                t0 = time.perf_counter()
                again = model.upscale(image, **options)
                case["warm_s"] = round(time.perf_counter() - t0, 4)
                case["repeatable"] = digest(again) == case["sha256"]
            cases.append(case)
            print(f"  {platform.machine()}: {case['case']}: {first:.2f} s", file=sys.stderr,
                  flush=True)
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, help="the ../shared folder (MuLUT and SR-LUT files)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--warm", action="store_true", help="also time a second call of each case")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    cases = run_cases(args.shared, args.warm)
    report = {"machine": platform.machine(), "python": platform.python_version(),
              "numpy": np.__version__, "numba": numba.__version__,
              "threads": numba.get_num_threads(), "seconds": round(time.perf_counter() - t0, 2),
              "cases": cases}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each way of storing RC window tables costs: a bundle's tables KB and PSNR with its RC
tables as given, packed (``rclut convert --pack-rc``: centre row int16, the others int8 codes
times a power of two) and requantised to plain int8 (entries / 256, thresholds / 256 rounded up).

    python scripts/rc_storage_study.py [BUNDLE] [--data ../shared/data/benchmark/Set5 ...]

Run it on an int16 bundle (e.g. ``git show 16536c8:rclut_numba/models/rclut_x4.npz``, the
default before packing) to see all three.  Values stay in int16 arrays so that the unchanged
engine runs them; sizes are what a bundle would store.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rclut_numba.bundle import BundleError, bundle_size_kb, load_bundle
from rclut_numba.evaluation import DatasetError, tables_psnr
from rclut_numba.rc_storage import project_rc_tables

ROOT = Path(__file__).resolve().parents[1]


INT8_STEP = 256  # int16 -> int8 range


def plain_int8(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Every RC table divided by 256 (thresholds rounded up) and the bytes int8 storage saves."""
    out, saved = dict(arrays), 0
    for name, table in arrays.items():
        if name.endswith("_rc_table"):
            key = name[: -len("_rc_table")]
            out[name] = np.round(table / INT8_STEP).astype(np.int16)
            thresholds = arrays[f"{key}_rc_thresholds"]
            out[f"{key}_rc_thresholds"] = np.ceil(thresholds / INT8_STEP).astype(np.int32)
            saved += table.size  # one byte an entry instead of two
    return out, saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?",
                    default=str(ROOT / "rclut_numba" / "models" / "rclut_x4.npz"))
    ap.add_argument("--data", nargs="+",
                    default=[str(ROOT.parent / "shared" / "data" / "benchmark" / "Set5")])
    args = ap.parse_args()
    try:
        spec, arrays = load_bundle(args.bundle)
        if not any(n.endswith("_rc_table") for n in arrays):
            raise BundleError(f"{args.bundle}: model '{spec.name}' has no RC tables")
        int8, saved = plain_int8(arrays)
        packed = project_rc_tables(arrays)
        # a plain-int8 bundle does not exist: its size is the int16 layout less one byte an entry
        unpacked_kb = sum(a.nbytes for a in arrays.values()) / 1024
        rows = (("as given", arrays, bundle_size_kb(spec, arrays)),
                ("packed (--pack-rc)", packed, bundle_size_kb(spec, packed)),
                ("plain int8", int8, unpacked_kb - saved / 1024))
        names = [Path(d).name for d in args.data]
        print(f"{'RC tables':20s} {'KB':>7s}  " + "  ".join(f"{n:>8s}" for n in names))
        for label, arrs, kb in rows:
            scores = [tables_psnr(spec, arrs, d) for d in args.data]
            print(f"{label:20s} {kb:7.1f}  " + "  ".join(f"{p:8.4f}" for p in scores), flush=True)
    except (BundleError, DatasetError, OSError) as e:
        print(f"rc_storage_study: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

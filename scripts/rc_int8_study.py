"""What int8 RC window tables would cost: a bundle's Set5 PSNR as shipped (int16 tables) and
with every RC table requantised to 8 bits (entries / 256, thresholds / 256 rounded up).

    python scripts/rc_int8_study.py [BUNDLE] [--data ../shared/data/benchmark/Set5]

int8 tables would save half of the RC tables' 83 KB; this measures the precision they lose.
Values stay in int16 arrays so that the unchanged engine runs them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rclut_numba.bundle import BundleError, bundle_size_kb, load_bundle  # noqa: E402
from rclut_numba.evaluation import DatasetError, tables_psnr  # noqa: E402

STEP = 256  # int16 -> int8 range


def requantised(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(arrays)
    for name, table in arrays.items():
        if name.endswith("_rc_table"):
            key = name[: -len("_rc_table")]
            out[name] = np.round(table / STEP).astype(np.int16)
            out[f"{key}_rc_thresholds"] = np.ceil(arrays[f"{key}_rc_thresholds"] / STEP).astype(np.int32)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?", default=str(ROOT / "rclut_numba" / "models" / "rclut_x4.npz"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "benchmark" / "Set5"))
    args = ap.parse_args()
    try:
        spec, arrays = load_bundle(args.bundle)
        if not any(n.endswith("_rc_table") for n in arrays):
            raise BundleError(f"{args.bundle}: model '{spec.name}' has no RC tables")
        # int8 storage: the RC tables at one byte an entry, every other array as it is
        rc_bytes = sum(a.nbytes for n, a in arrays.items() if n.endswith("_rc_table"))
        total = bundle_size_kb(spec, arrays)
        for label, arrs, kb in (("int16 (as shipped)", arrays, total),
                                ("int8 (requantised)", requantised(arrays), total - rc_bytes / 2048)):
            psnr = tables_psnr(spec, arrs, args.data)
            print(f"{label:20s} {kb:7.1f} KB of tables  {Path(args.data).name} PSNR {psnr:.4f}")
    except (BundleError, DatasetError, OSError) as e:
        print(f"rc_int8_study: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

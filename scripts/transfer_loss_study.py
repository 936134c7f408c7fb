"""How much PSNR the network -> LUT transfer costs, at the shipped sampling interval and a finer
one: a trained network's Set5 PSNR beside that of its tables sampled every 16 and every 8
levels (no fine-tuning).  A loss that shrinks at interval 8 is a sampling loss of the 4D tables.

    python scripts/transfer_loss_study.py CHECKPOINT [CHECKPOINT ...] [--intervals 16 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rclut_numba.engine import LutModel  # noqa: E402
from rclut_numba.evaluation import evaluate  # noqa: E402
from training.train import TrainError, load_checkpoint, model_from_checkpoint, validate  # noqa: E402
from training.transfer import transfer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--intervals", type=int, nargs="+", default=[16, 8])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "benchmark" / "Set5"))
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"transfer_loss_study: {args.data} is not a folder")
    print("| checkpoint | step | network | " + " | ".join(f"LUT, interval {i}" for i in args.intervals) + " |")
    print("|---|---|---|" + "---|" * len(args.intervals))
    for path in args.checkpoints:
        try:
            ck = load_checkpoint(path)
        except TrainError as e:
            sys.exit(f"transfer_loss_study: {e}")
        net = model_from_checkpoint(ck).eval()
        spec = net.spec
        cells = [f"{validate(net, args.data, spec.scale)[0]:.2f}"]
        for interval in args.intervals:
            net.spec = dataclasses.replace(spec, interval=interval)
            lut_spec, arrays = transfer(net)
            model = LutModel(lut_spec, arrays)
            r = evaluate(model.upscale, args.data, spec.scale, out=lambda _s: None)
            cells.append(f"{r['mean_psnr']:.2f}")
        net.spec = spec
        print(f"| {path} | {ck['step']} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""How much PSNR the network -> LUT transfer costs, at the shipped sampling interval and a finer
one: a trained network's Set5 PSNR beside that of its tables sampled every 16 and every 8
levels (no fine-tuning), and every 16 with the RC levels spread (``transfer --spread-rc``).  A
loss that shrinks at interval 8 is a sampling loss of the 4D tables.
Then, for networks with RC windows in stage 1, the span of each window's outputs on the data
(1st to 99th percentile), which is the part of a 4D table's input range the images use.

    python scripts/transfer_loss_study.py CHECKPOINT [CHECKPOINT ...] [--intervals 16 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from rclut_numba.evaluation import dataset_pairs, tables_psnr
from rclut_numba.spec import array_key
from training.train import TrainError, load_checkpoint, model_from_checkpoint, validate
from training.transfer import grid_values, transfer

ROOT = Path(__file__).resolve().parents[1]


def rc_output_spans(net, data: str) -> list[str]:
    """Markdown rows: each stage-1 RC window's output percentiles over the LR planes of ``data``."""
    planes = [lr[..., c] if lr.ndim == 3 else lr
              for _, lr, _ in dataset_pairs(data, net.spec.scale)
              for c in range(lr.shape[2] if lr.ndim == 3 else 1)]
    rows = []
    for bi, br in enumerate(net.spec.stages[0].branches):
        if not br.rc:
            continue
        rc = net.blocks[array_key(0, bi)].rc
        with torch.no_grad():
            out = np.concatenate([rc(torch.tensor(p / 255.0, dtype=torch.float32)[None, None])
                                  .flatten().numpy() for p in planes])
        lo, hi = np.percentile(out, [1, 99])
        grid = grid_values(net.spec).numpy()
        inside = int(((grid >= lo) & (grid <= hi)).sum())
        rows.append(f"| {array_key(0, bi)} ({br.rc}x{br.rc}) | {lo:.0f} to {hi:.0f} "
                    f"| {inside} of {len(grid)} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--intervals", type=int, nargs="+", default=[16, 8])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "benchmark" / "Set5"))
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"transfer_loss_study: {args.data} is not a folder")
    intervals = " | ".join(f"LUT, interval {i}" for i in args.intervals)
    print(f"| checkpoint | step | network | {intervals} "
          "| LUT, checkpoint's interval, RC levels spread |")
    print("|---|---|---|" + "---|" * (len(args.intervals) + 1))
    spans = {}
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
            cells.append(f"{tables_psnr(*transfer(net), args.data):.2f}")
        net.spec = spec
        if any(br.rc for _, _, br in spec.branches()):
            cells.append(f"{tables_psnr(*transfer(net, spread_rc=True), args.data):.2f}")
        else:
            cells.append("no RC windows")
        print(f"| {path} | {ck['step']} | " + " | ".join(cells) + " |", flush=True)
        spans[path] = rc_output_spans(net, args.data)
    for path, rows in spans.items():
        if rows:
            print(f"\n{path}: stage-1 RC outputs on the data (1st to 99th percentile), and the "
                  f"4D table's sample points inside that span\n")
            print("| window | span | sample points |\n|---|---|---|")
            print("\n".join(rows))


if __name__ == "__main__":
    main()

"""Seconds per LUT fine-tuning step: autograd's gathers beside the hand-written backward.

  .venv/bin/python benchmarks/bench_finetune.py [--steps 3] [--batch 16] [--crop 48]

Models: the default RC-LUT (``rclut_numba/models/rclut_x4.npz``) and, when ``../shared`` is
beside the checkout, the published MuLUT LUTs.  Each is timed as one ``LutForward`` + Adam on
random crops, two ways:

* autograd (anchor): the RC window sum and the stage's simplex gather as plain autograd
  ``embedding_bag`` calls, whose table gradient sorts every index (the first version of
  ``training/lut_forward.py``);
* hand-written: ``_WindowSum`` (bincount table gradient) and ``_WeightedGather`` (``index_add_``),
  what fine-tuning runs.

Both compute the same values and gradients (``tests/test_lut_forward.py``).  Steps are
interleaved so that load from other processes hits both alike; one warm-up step each.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rclut_numba.bundle import load_bundle
from rclut_numba.importers import import_mulut_folder
from training import lut_forward
from training.train import default_threads

ROOT = Path(__file__).resolve().parents[1]


HAND_WRITTEN = (lut_forward._WindowSum.apply, lut_forward._WeightedGather.apply)


def window_sum_autograd(table, v, idx):
    slope = lut_forward.central_difference(table.detach().reshape(-1, 256))
    return (F.embedding_bag(idx, table.reshape(-1, 1), mode="sum")
            + F.embedding_bag(idx, slope.reshape(-1, 1), mode="sum",
                              per_sample_weights=(v - v.detach()).double())).reshape(-1)


def weighted_gather_autograd(table, weights, idx):
    return F.embedding_bag(idx, table, mode="sum", per_sample_weights=weights)


def use(autograd: bool) -> None:
    if autograd:
        lut_forward._WindowSum.apply = staticmethod(window_sum_autograd)
        lut_forward._WeightedGather.apply = staticmethod(weighted_gather_autograd)
    else:
        lut_forward._WindowSum.apply, lut_forward._WeightedGather.apply = HAND_WRITTEN


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [("RC-LUT (default)", *load_bundle(ROOT / "rclut_numba" / "models" / "rclut_x4.npz"))]
    mulut = ROOT.parent / "shared" / "mulut" / "luts"
    if mulut.is_dir():
        models.append(("MuLUT-SDY-X2 (published LUTs)", *import_mulut_folder(mulut)))
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, crop "
          f"{args.crop}, {args.steps} timed steps (+1 warm-up) per variant", flush=True)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for label, spec, arrays in models:
        net = lut_forward.LutForward(spec, arrays)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        x = torch.randint(0, 256, (args.batch, 1, args.crop, args.crop), generator=gen).float()
        s = spec.scale
        hr = torch.rand(args.batch, 1, args.crop * s, args.crop * s, generator=gen)
        times = {"autograd": [], "hand-written": []}
        for i in range(args.steps + 1):
            for variant in times:
                use(variant == "autograd")
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                F.mse_loss(net(x) / 255.0, hr).backward()
                opt.step()
                if i:
                    times[variant].append(time.perf_counter() - t0)
        use(False)
        a, h = (statistics.median(times[k]) for k in ("autograd", "hand-written"))
        rows.append((label, a, h))
        print(f"{label:32s} autograd {a:6.2f} s  hand-written {h:6.2f} s  x{a / h:.1f}", flush=True)
    print("\n| model | autograd (anchor) s/step | hand-written s/step | speed-up |")
    print("|---|---|---|---|")
    for label, a, h in rows:
        print(f"| {label} | {a:.2f} | {h:.2f} | {a / h:.1f}x |")


if __name__ == "__main__":
    main()

"""Seconds per training step: a deliberately naive step beside the optimised one, in one run.

  .venv/bin/python benchmarks/bench_training.py [--steps 3] [--batch 32] [--crop 48] [--nf 64]

For each config (default MuLUT-SDY-X2 and RC-LUT) one model and one Adam optimiser are timed
with three forward passes of the same network:

* naive: ``training.naive.naive_forward``, the way the reference code is written -- one block
  call per stage, rotation and branch, ``F.unfold`` per call, real (dilated) convolutions on one
  patch per pixel with explicit dense concatenation, and the RC window unfolded with each
  position's ``Linear(1,C)`` / ``Linear(C,1)`` applied in a Python loop.  Its activations do not
  fit in memory at batch 32 for RC-LUT (tens of GB), so it runs the batch as micro-batches of
  ``--naive-chunk`` samples with gradient accumulation: the same samples and one optimiser
  step, i.e. still a batch-32 step.
* optimised: ``LUTNet`` (rotations batched, RC folded into one N x N convolution, dense layers
  as split ``addmm`` without concatenation, 1-D tables for single-pixel branches, row chunks).
* optimised + bf16: the same with the MLP matmuls under bfloat16 autocast (``[train] amp``).

Steps are interleaved (naive, optimised, bf16, naive, ...) so that load from other processes
on a shared machine hits all of them alike; one warm-up step each is not timed.  The table
gives the median (and min) over ``--steps`` timed steps and the naive / optimised ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rclut_numba.spec import ModelSpec
from training.naive import naive_forward
from training.networks import LUTNet
from training.train import default_threads

ROOT = Path(__file__).resolve().parents[1]


def _steps(model, opt, x, hr, naive_chunk):
    def naive():
        opt.zero_grad(set_to_none=True)
        n = x.shape[0]
        for xs, hs in zip(x.split(naive_chunk), hr.split(naive_chunk), strict=True):
            loss = F.mse_loss(naive_forward(model, xs) / 255.0, hs) * (xs.shape[0] / n)
            loss.backward()
        opt.step()

    def optimised(amp=None):
        model.set_amp(amp)
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x) / 255.0, hr).backward()
        opt.step()
        model.set_amp(None)

    return {"naive": naive, "optimised": optimised,
            "optimised+bf16": lambda: optimised(torch.bfloat16)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["mulut_sdy_x2", "rclut"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--nf", type=int, default=64)
    ap.add_argument("--naive-chunk", type=int, default=4, help="naive micro-batch (memory)")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--no-bf16", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, crop "
          f"{args.crop}, nf {args.nf}, {args.steps} timed steps (+1 warm-up) per variant",
          flush=True)
    rows = []
    for name in args.configs:
        spec = ModelSpec.from_toml(ROOT / "training" / "configs" / f"{name}.toml")
        torch.manual_seed(0)
        model = LUTNet(spec, nf=args.nf)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.batch, 1, args.crop, args.crop), generator=g).float() / 255
        s = spec.scale * args.crop
        hr = torch.randint(0, 256, (args.batch, 1, s, s), generator=g).float() / 255
        fns = _steps(model, opt, x, hr, args.naive_chunk)
        if args.no_bf16:
            del fns["optimised+bf16"]
        times = {k: [] for k in fns}
        for rep in range(args.steps + 1):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                dt = time.perf_counter() - t
                if rep:
                    times[k].append(dt)
                print(f"  {name} {k:15s} step {rep}{' (warm-up)' if not rep else ''}: "
                      f"{dt:.2f} s", flush=True)
        rows.append((name, {k: (statistics.median(v), min(v)) for k, v in times.items()}))
    print()
    head = f"{'config':14s} {'naive s/step':>14s} {'optimised':>14s} {'ratio':>6s}"
    if not args.no_bf16:
        head += f" {'opt+bf16':>14s} {'ratio':>6s}"
    print(head)
    for name, t in rows:
        nv, op = t["naive"], t["optimised"]
        line = (f"{name:14s} {nv[0]:7.2f} ({nv[1]:5.2f}) {op[0]:7.2f} ({op[1]:5.2f}) "
                f"{nv[0] / op[0]:6.2f}")
        if "optimised+bf16" in t:
            bf = t["optimised+bf16"]
            line += f" {bf[0]:7.2f} ({bf[1]:5.2f}) {nv[0] / bf[0]:6.2f}"
        print(line)
    print("s/step: median (min) over the timed steps; ratio of the medians")


if __name__ == "__main__":
    main()

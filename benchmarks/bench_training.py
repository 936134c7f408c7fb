"""Seconds per training step, in one run: the earlier paths beside the default one.

  .venv/bin/python benchmarks/bench_training.py [--steps 4] [--batch 32] [--crop 48]
                                                [--threads 2] [--configs mulut_sdy_x2 rclut]

For each config (MuLUT-SDY-X2 and RC-LUT by default) one model and one Adam optimiser are timed
in three precisions of the block MLPs (``[train] precision``):

* ``float32``: the float32 path (split addmm, row chunks), as before this benchmark's version;
* ``bf16-autocast``: the earlier bfloat16 path (autocast over the float32 code);
* ``bf16``: the default, ``training.dense_mlp`` (fused bfloat16 Function, hand-written backward).

and under two allocators, each in a subprocess of its own (the allocator is fixed at process
start): glibc's (how training ran before) and jemalloc with purging off (what ``rclut-train``
re-executes itself under, see ``training/allocator.py``).  "Before" is float32 or
bf16-autocast under glibc; "now" is bf16 under jemalloc.

Inside a process the precisions are interleaved step by step (one warm-up step each, not
timed) so that load from other processes hits all of them alike; the subprocesses alternate
(glibc, jemalloc, glibc, jemalloc) for the same reason.  Printed per config: median s/step,
the achieved GFLOP/s of the matmuls the spec implies (3x the forward MACs of every block MLP
and RC window, 2 FLOP per MAC), the share of one profiled step spent in matmul ops, and the
time to assemble one batch from the training data (``../shared/data/train`` when present)
as a share of the default step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "bf16-autocast", "bf16")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::matmul",
              "aten::mkldnn_convolution", "aten::convolution_backward")


def step_flops(spec, nf: int, batch: int, crop: int) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3x forward) from the spec."""
    from rclut_numba.spec import PATTERN_OFFSETS

    macs = 0
    for si, _bi, br in spec.branches():
        n_out = spec.n_outputs(si)
        n_in = len(PATTERN_OFFSETS[br.pattern])
        rows = batch * 4 * crop * crop  # 4 rotations; one row per LR pixel of the stage input
        per_row = n_in * nf + sum(nf * nf * k for k in range(1, 5)) + 5 * nf * n_out
        macs += (rows if n_in > 1 else 256) * per_row
        if br.rc:
            macs += rows * br.rc * br.rc
    return 3 * 2 * macs


def _worker(args) -> dict:
    """Time the precisions in this process; returns {precision: [s, ...], ...}."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from rclut_numba.spec import ModelSpec
    from training.allocator import using_jemalloc
    from training.networks import LUTNet

    torch.set_num_threads(args.threads)
    spec = ModelSpec.from_toml(ROOT / "training" / "configs" / f"{args.config}.toml")
    torch.manual_seed(0)
    model = LUTNet(spec, nf=args.nf)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 1, args.crop, args.crop), generator=g).float() / 255
    s = spec.scale * args.crop
    hr = torch.randint(0, 256, (args.batch, 1, s, s), generator=g).float() / 255

    def step(precision):
        model.set_precision(precision)
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x) / 255.0, hr).backward()
        opt.step()

    times = {p: [] for p in PRECISIONS}
    for rep in range(args.steps + 1):
        for p in PRECISIONS:
            t = time.perf_counter()
            step(p)
            if rep:
                times[p].append(time.perf_counter() - t)
    out = {"jemalloc": using_jemalloc(), "times": times}
    if args.profile:
        shares = {}
        for p in PRECISIONS:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(p)
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
            shares[p] = mm / max(total, 1)
        out["matmul_share"] = shares
    return out


def _run_worker(args, allocator: str, profile: bool) -> dict:
    env = dict(os.environ)
    cmd = [sys.executable, __file__, "--worker", "--config", args.config_one,
           "--steps", str(args.steps), "--batch", str(args.batch), "--crop", str(args.crop),
           "--nf", str(args.nf), "--threads", str(args.threads)]
    if profile:
        cmd.append("--profile")
    if allocator == "jemalloc":
        from training.allocator import JEMALLOC_CONF, find_jemalloc

        lib = find_jemalloc()
        if lib is None:
            return {}
        env["LD_PRELOAD"] = lib
        env["MALLOC_CONF"] = JEMALLOC_CONF
    else:
        env.pop("LD_PRELOAD", None)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _batch_time(batch: int, crop: int, scale: int) -> float | None:
    """Median seconds to assemble one batch from the real training data, if present."""
    data = ROOT.parent / "shared" / "data" / "train"
    if not data.is_dir():
        return None
    import tempfile

    from training.data import SRDataset

    cache = ROOT / "runs" / "cache_all"
    cache = cache if cache.is_dir() else Path(tempfile.mkdtemp())
    ds = SRDataset(sorted(data.iterdir()), scale, crop, cache, 0, log=lambda _s: None)
    ts = []
    for step in range(20):
        t = time.perf_counter()
        ds.batch(step, batch)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["mulut_sdy_x2", "rclut"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per precision and process")
    ap.add_argument("--rounds", type=int, default=2, help="glibc/jemalloc subprocess pairs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--nf", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", dest="config", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    import torch

    from rclut_numba.spec import ModelSpec

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, crop "
          f"{args.crop}, nf {args.nf}; {args.rounds} x (glibc, jemalloc) processes x "
          f"{args.steps} timed steps per precision", flush=True)
    rows = []
    for name in args.configs:
        args.config_one = name
        spec = ModelSpec.from_toml(ROOT / "training" / "configs" / f"{name}.toml")
        times = {(a, p): [] for a in ("glibc", "jemalloc") for p in PRECISIONS}
        shares = {}
        for rnd in range(args.rounds):
            for alloc in ("glibc", "jemalloc"):
                res = _run_worker(args, alloc, profile=(rnd == 0 and alloc == "jemalloc"))
                if not res:
                    print(f"  {name}: jemalloc not installed (apt install libjemalloc2)")
                    continue
                for p, ts in res["times"].items():
                    times[(alloc, p)] += ts
                shares.update(res.get("matmul_share", {}))
                print(f"  {name} round {rnd} {alloc:8s} " + "  ".join(
                    f"{p} {statistics.median(ts):.2f}s" for p, ts in res["times"].items()),
                    flush=True)
        med = {k: statistics.median(v) for k, v in times.items() if v}
        rows.append((name, med, shares, step_flops(spec, args.nf, args.batch, args.crop),
                     _batch_time(args.batch, args.crop, spec.scale)))
    print()
    print(f"{'config':13s} {'allocator':9s} " + " ".join(f"{p:>14s}" for p in PRECISIONS))
    for name, med, *_ in rows:
        for alloc in ("glibc", "jemalloc"):
            if (alloc, "bf16") in med:
                print(f"{name:13s} {alloc:9s} " + " ".join(
                    f"{med[(alloc, p)]:12.2f} s" for p in PRECISIONS))
    print()
    for name, med, shares, flops, bt in rows:
        now = med.get(("jemalloc", "bf16"), med[("glibc", "bf16")])
        before32, before16 = med[("glibc", "float32")], med[("glibc", "bf16-autocast")]
        print(f"{name}: default (bf16, jemalloc) {now:.2f} s/step; float32 before "
              f"{before32:.2f} s ({before32 / now:.2f}x), bf16-autocast before {before16:.2f} s "
              f"({before16 / now:.2f}x)")
        print(f"  matmul FLOPs per step {flops / 1e9:.0f} G: default {flops / now / 1e9:.0f} "
              f"GFLOP/s, float32 before {flops / before32 / 1e9:.0f} GFLOP/s")
        if shares:
            print("  share of a profiled step in matmul ops (jemalloc): " + ", ".join(
                f"{p} {100 * s:.0f}%" for p, s in shares.items()))
        if bt is not None:
            print(f"  batch assembly from ../shared/data/train: {1000 * bt:.1f} ms "
                  f"= {100 * bt / now:.1f}% of the default step")
    print("s/step: median over all timed steps; ratios of medians measured in this run")


if __name__ == "__main__":
    main()

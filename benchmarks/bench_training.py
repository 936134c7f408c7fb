"""Seconds per training step and how close the step comes to the machine's matmul rate.

  .venv/bin/python benchmarks/bench_training.py [--configs rclut] [--precisions auto float32]
        [--steps 3] [--rounds 1] [--batch 32] [--crop 48] [--threads 2] [--timeout 600]
        [--profile] [--allow-emulated]

For each config and precision a worker subprocess builds the network and one Adam optimiser,
runs one warm-up step and ``--steps`` timed steps on a random batch, then times ``torch.mm`` at
the block MLP's shapes in the same precision (the three products of each layer, forward,
weight gradient and input gradient, on chunks of ``training.dense_mlp.DEFAULT_CHUNK`` rows).
Printed per config and precision:

* the precision ``auto`` resolves to on this machine (``training/precision.py``) and why;
* s/step (median of the timed steps);
* achieved GFLOP/s: the matmul FLOPs the spec implies (3x the forward MACs of every block MLP
  and RC window, 2 FLOP per MAC) over s/step;
* the ratio of that rate to the same worker's ``torch.mm`` rate (100 %: the step does nothing
  but matmuls at full speed);
* with ``--profile``, the share of one profiled step's CPU time spent in matmul ops.

Each worker runs under the allocator ``rclut-train`` would pick for its precision (jemalloc for
bf16 when installed, see ``training/allocator.py``; glibc otherwise).  Workers of a round run
one after another; ``--rounds`` repeats the round so that load from other processes hits every
precision alike.  A bf16 precision on a CPU without native bf16 matmuls (AVX2-only, say) is
skipped with a message, as oneDNN's emulation takes minutes per step there
(``--allow-emulated`` times it anyway).

Exit status: 0 when every worker gave its figures; 1 when a worker crashed, timed out or printed
no result (each one is named on stderr), or when no figure at all was measured.
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
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repo's training package

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::matmul",
              "aten::mkldnn_convolution", "aten::convolution_backward")
BF16_PRECISIONS = ("bf16", "bf16-autocast")


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


def mlp_layer_shapes(spec, nf: int) -> list[tuple[int, int]]:
    """``(outputs, inputs)`` of every layer of a 4-input block MLP of ``spec``, the bias row
    included (``training.dense_mlp`` folds the bias into the matmul)."""
    n_out = max(spec.n_outputs(si) for si in range(len(spec.stages)))
    return [(nf, 1 + 4)] + [(nf, 1 + nf * k) for k in range(1, 5)] + [(n_out, 1 + 5 * nf)]


def matmul_rate(shapes, dtype, rows: int, seconds: float = 2.0) -> float:
    """GFLOP/s of ``torch.mm`` over each layer's forward, weight-gradient and input-gradient
    products at ``rows`` rows, in ``dtype``, outputs preallocated (as the fused MLP does)."""
    import torch

    g = torch.Generator().manual_seed(0)
    jobs = []
    for n, k in shapes:
        w = torch.randn(n, k, generator=g).to(dtype)
        x = torch.randn(k, rows, generator=g).to(dtype)
        dz = torch.randn(n, rows, generator=g).to(dtype)
        jobs += [(w, x, torch.empty(n, rows, dtype=dtype)),        # forward
                 (dz, x.t(), torch.empty(n, k, dtype=dtype)),      # weight gradient
                 (w.t(), dz, torch.empty(k, rows, dtype=dtype))]   # input gradient
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in jobs)

    def once():
        for a, b, out in jobs:
            torch.mm(a, b, out=out)

    once()  # warm-up: oneDNN primitives are created on first use
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < seconds:
        once()
        reps += 1
    return flops * reps / (time.perf_counter() - t0) / 1e9


def _worker(args) -> dict:
    """Time ``args.precision`` on ``args.config``; prints one JSON line for the parent."""
    import torch
    import torch.nn.functional as F

    from rclut_numba.spec import ModelSpec
    from training.allocator import using_jemalloc
    from training.dense_mlp import DEFAULT_CHUNK
    from training.networks import LUTNet
    from training.precision import resolve_precision

    torch.set_num_threads(args.threads)
    precision, why = resolve_precision(args.precision, "cpu")
    spec = ModelSpec.from_toml(ROOT / "training" / "configs" / f"{args.config}.toml")
    torch.manual_seed(0)
    model = LUTNet(spec, nf=args.nf)
    model.set_precision(precision)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 1, args.crop, args.crop), generator=g).float() / 255
    s = spec.scale * args.crop
    hr = torch.randint(0, 256, (args.batch, 1, s, s), generator=g).float() / 255

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x) / 255.0, hr).backward()
        opt.step()

    times = []
    for rep in range(args.steps + 1):
        t = time.perf_counter()
        step()
        if rep:  # the first step builds oneDNN primitives and warms the allocator
            times.append(time.perf_counter() - t)
    dtype = torch.bfloat16 if precision in BF16_PRECISIONS else torch.float32
    out = {"precision": precision, "why": why, "jemalloc": using_jemalloc(), "times": times,
           "mm_gflops": matmul_rate(mlp_layer_shapes(spec, args.nf), dtype, DEFAULT_CHUNK)}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        out["matmul_share"] = sum(e.self_cpu_time_total for e in events
                                  if e.key in MATMUL_OPS) / max(total, 1)
        out["top_ops"] = [(e.key, e.self_cpu_time_total / 1e6) for e in sorted(
            events, key=lambda e: -e.self_cpu_time_total)[:12]]
    return out


class WorkerFailed(RuntimeError):
    """A worker that crashed, timed out or printed no result; the message names it."""


def _run_worker(args, config: str, precision: str, allocator: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", config,
           "--precision", precision, "--steps", str(args.steps), "--batch", str(args.batch),
           "--crop", str(args.crop), "--nf", str(args.nf), "--threads", str(args.threads)]
    if args.profile:
        cmd.append("--profile")
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if allocator == "jemalloc":
        from training.allocator import JEMALLOC_CONF, find_jemalloc

        env["LD_PRELOAD"] = find_jemalloc()
        env["MALLOC_CONF"] = JEMALLOC_CONF
    name = f"worker {config} {precision} ({allocator})"
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                             timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(f"{name} timed out after {args.timeout} s") from None
    tail = "\n    ".join(res.stderr.strip().splitlines()[-6:])
    if res.returncode != 0:
        raise WorkerFailed(f"{name} crashed (exit status {res.returncode}):\n    {tail}")
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise WorkerFailed(f"{name} printed no result:\n    {tail}") from None


def _allocator(precision: str) -> str:
    """What ``rclut-train`` runs ``precision`` under (training.cli._maybe_jemalloc)."""
    from training.allocator import find_jemalloc

    return "jemalloc" if precision == "bf16" and find_jemalloc() else "glibc"


def _plan(precisions, allow_emulated: bool, say) -> list[str]:
    """The precisions to time, resolved and deduplicated; emulated bf16 left out (and said)."""
    from training.precision import choose_precision, probe_cpu, resolve_precision

    native, why = choose_precision("cpu", probe_cpu())
    plan = []
    for p in precisions:
        resolved = resolve_precision(p, "cpu")[0]
        if resolved in BF16_PRECISIONS and native != "bf16" and not allow_emulated:
            say(f"skipped {p}: bf16 matmuls would be emulated here ({why}); a step takes "
                f"minutes (--allow-emulated times it anyway)")
            continue
        if resolved not in plan:
            plan.append(resolved)
    return plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["rclut"],
                    help="config names in training/configs (default: rclut)")
    ap.add_argument("--precisions", nargs="+", default=["auto", "float32"],
                    help="auto, float32, bf16, bf16-autocast (default: auto float32)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per worker (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="workers per config and precision")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--nf", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per worker (default 600)")
    ap.add_argument("--profile", action="store_true", help="matmul share of a profiled step")
    ap.add_argument("--allow-emulated", action="store_true",
                    help="time bf16 even where the CPU would emulate it")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)), flush=True)
        return 0

    import platform
    import signal

    import torch

    # SIGTERM unwinds like Ctrl-C, so subprocess.run kills the worker in flight
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    from rclut_numba.spec import ModelSpec
    from training.precision import resolve_precision

    def say(line=""):
        print(line, flush=True)

    auto, why = resolve_precision("auto", "cpu")
    say(f"torch {torch.__version__}, {platform.machine()}, {args.threads} threads, batch "
        f"{args.batch}, crop {args.crop}, nf {args.nf}, {args.steps} timed steps per worker, "
        f"{args.rounds} round(s)")
    say(f"precision auto -> {auto} ({why})")
    plan = _plan(args.precisions, args.allow_emulated, say)
    failures, figures = [], {}
    for name in args.configs:
        for rnd in range(args.rounds):
            for precision in plan:
                allocator = _allocator(precision)
                try:
                    res = _run_worker(args, name, precision, allocator)
                except WorkerFailed as e:
                    failures.append(str(e))
                    print(f"error: {e}", file=sys.stderr, flush=True)
                    continue
                fig = figures.setdefault((name, precision), {"times": [], "mm": [], "res": res,
                                                             "allocator": allocator})
                fig["times"] += res["times"]
                fig["mm"].append(res["mm_gflops"])
                say(f"  {name} round {rnd} {precision} ({allocator}): "
                    f"{statistics.median(res['times']):.3f} s/step, torch.mm "
                    f"{res['mm_gflops']:.0f} GFLOP/s")
    if figures:
        say()
        say(f"{'config':13s} {'precision':14s} {'s/step':>8s} {'GFLOP/s':>8s} "
            f"{'mm GFLOP/s':>10s} {'of mm':>6s} {'matmul share':>12s}")
    for (name, precision), fig in figures.items():
        spec = ModelSpec.from_toml(ROOT / "training" / "configs" / f"{name}.toml")
        sps = statistics.median(fig["times"])
        rate = step_flops(spec, args.nf, args.batch, args.crop) / sps / 1e9
        mm = statistics.median(fig["mm"])
        share = fig["res"].get("matmul_share")
        mark = " (auto)" if precision == auto else ""
        say(f"{name:13s} {precision + mark:14s} {sps:8.3f} {rate:8.0f} {mm:10.0f} "
            f"{100 * rate / mm:5.0f}% " + (f"{100 * share:11.0f}%" if share is not None else ""))
        for op, secs in fig["res"].get("top_ops", [])[:8]:
            say(f"    {op:40s} {secs:.3f} s")
    for name in args.configs:
        if auto == "float32" and (name, auto) in figures:
            say(f"{name}: auto is float32 here: the default step is the float32 step (1.00x)")
        elif (name, auto) in figures and (name, "float32") in figures:
            a = statistics.median(figures[(name, auto)]["times"])
            f = statistics.median(figures[(name, "float32")]["times"])
            say(f"{name}: auto ({auto}) s/step = {a / f:.2f} x float32 s/step")
    say("s/step: median of the timed steps; GFLOP/s: matmul FLOPs the spec implies per step; "
        "of mm: that rate over the same worker's torch.mm rate at the MLP's shapes")
    if failures:
        print(f"bench_training: {len(failures)} worker(s) failed: "
              + "; ".join(f.splitlines()[0].rstrip(":") for f in failures), file=sys.stderr)
        return 1
    if not figures:
        print("bench_training: no figure was measured", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""First run against later runs: whole-process times of one ``rclut upscale``, in one run.

    python benchmarks/bench_cold_start.py [--rounds N] [--image PATH] [--model PATH]
                                          [-- EXTRA rclut upscale ARGS]

Each round runs the same command (default: the bundled sample, ``rclut upscale
rclut_numba/samples/astronaut_lr.png -o OUT --force``) in fresh processes:

* cold: numba's cache empty (``NUMBA_CACHE_DIR`` a new empty folder), so every kernel the
  command needs is compiled, as on a fresh install or container;
* warm: the same command again on the cache the cold run wrote, twice (the first warm run
  also reads the operating system's file cache cold; the median is of the second ones).

Rounds interleave cold and warm so that a drifting machine slows both alike.  Printed: per
round and as medians, wall seconds and CPU seconds (user + system, the process and its threads:
less sensitive than wall time to other jobs on the machine), and the cold / warm ratio of
each.  The outputs of every run are compared byte for byte.  The processes run from a
temporary folder, so ``rclut_numba`` is the installed one (or the one on ``PYTHONPATH``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rclut_numba.planning import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "rclut_numba" / "samples" / "astronaut_lr.png"


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def timed_run(command: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process; exits if it fails."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read()
    child.stderr.close()
    if child.returncode != 0:
        sys.exit(f"bench_cold_start: {' '.join(command)} failed ({child.returncode}): {err}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image", type=Path, default=SAMPLE)
    p.add_argument("--model", type=Path, help="default: the embedded model")
    p.add_argument("extra", nargs="*", help="more rclut upscale arguments (after --)")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory(prefix="bench_cold_start_") as tmp:
        out = Path(tmp) / "out.png"
        command = [sys.executable, "-m", "rclut_numba.cli", "upscale", str(args.image.resolve()),
                   "-o", str(out), "--force", *args.extra]
        if args.model is not None:
            command += ["--model", str(args.model.resolve())]
        rows, reference = [], None
        for r in range(args.rounds):
            cache = Path(tmp) / f"cache{r}"
            cache.mkdir()
            env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
            cold = timed_run(command, env, tmp)
            outputs = [out.read_bytes()]
            timed_run(command, env, tmp)  # warms the file cache for the numba cache files
            warm = timed_run(command, env, tmp)
            outputs.append(out.read_bytes())
            reference = reference or outputs[0]
            if any(o != reference for o in outputs):
                sys.exit("bench_cold_start: outputs differ between runs")
            rows.append((cold, warm))

    import numba
    shown = ["rclut", "upscale", _shown(args.image), "-o", "OUT", *command[7:]]
    if args.model is not None:
        shown[-1] = _shown(args.model)
    print(f"`{' '.join(shown)}`, whole process; "
          f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numba {numba.__version__}; {args.rounds} rounds, cold and warm interleaved")
    print()
    print("| round | cold wall s | warm wall s | wall ratio | cold CPU s | warm CPU s "
          "| CPU ratio |")
    print("|---" * 7 + "|")

    def line(label, cold, warm):
        print(f"| {label} | {cold[0]:.2f} | {warm[0]:.2f} | {cold[0] / warm[0]:.1f}x "
              f"| {cold[1]:.2f} | {warm[1]:.2f} | {cold[1] / warm[1]:.1f}x |")

    for r, (cold, warm) in enumerate(rows, 1):
        line(str(r), cold, warm)
    median = [tuple(statistics.median(run[k] for run in runs) for k in range(2))
              for runs in zip(*rows, strict=True)]
    line("**median**", *median)


if __name__ == "__main__":
    main()

"""``make test-arm``: the engine must give the same bytes on aarch64 as on x86.

Builds (or finds, cached) the emulated aarch64 Python of ``arm_env.py``, runs ``parity_cases.py``
with it and with this interpreter on the same working tree, and compares the sha256 of every
output, case by case. Any difference fails: the engine's arithmetic is meant to be exact on
every platform, so a difference is a bug to remove, not a tolerance to widen.

Exit status: 0 identical; 1 some output differs (or a case ran on one side only); 2 the
environment could not be built or a side crashed or ran out of time (one line says why).
The aarch64 side keeps its numba cache in ``build/arm/numba-cache`` (``--cold`` empties it first).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from arm_env import SetupError, default_cache_dir, ensure_env  # noqa: E402

CASES = HERE / "parity_cases.py"
BUILD = REPO / "build" / "arm"


class SideFailed(RuntimeError):
    pass


def run_side(label: str, cmd: list[str], env: dict, out: Path,
             timeout: float) -> tuple[dict, float]:
    """Run one side, echoing its progress lines (minutes pass under emulation), killed after
    ``timeout`` seconds; its whole output is kept in build/arm/LABEL.log."""
    log = BUILD / f"{label}.log"
    t0 = time.perf_counter()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        last = "no output"
        try:
            for line in proc.stdout:
                log_file.write(line)
                if line.strip():
                    last = line.strip()
                    print(f"  {last}", flush=True)
            returncode = proc.wait()
        finally:
            killer.cancel()
            if proc.poll() is None:  # interrupted: leave no emulated process behind
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - t0
    if seconds >= timeout and returncode != 0:
        raise SideFailed(f"{label} run passed its {timeout:.0f} s limit (--timeout)")
    if returncode != 0:
        raise SideFailed(f"{label} run failed (exit {returncode}): {last} (log: {log})")
    return json.loads(out.read_text()), seconds


def compare(x86: dict, arm: dict) -> list[str]:
    """One line per difference, empty when every case matches."""
    keys = ("skipped", "input_sha256", "shape", "dtype", "sha256")
    a_cases = {c["case"]: c for c in arm["cases"]}
    x_cases = {c["case"]: c for c in x86["cases"]}
    problems = [f"{name}: only on aarch64" for name in a_cases if name not in x_cases]
    for name, x in x_cases.items():
        a = a_cases.get(name)
        if a is None:
            problems.append(f"{name}: only on x86")
            continue
        for key in keys:
            if x.get(key) != a.get(key):
                problems.append(f"{name}: {key} differs: x86 {x.get(key)} != aarch64 {a.get(key)}")
        if a.get("repeatable") is False or x.get("repeatable") is False:
            problems.append(f"{name}: a second call gave other bytes")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, help=f"environment cache (default {default_cache_dir()})")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                   help="folder with mulut/ and srlut/ (default ../shared)")
    p.add_argument("--cold", action="store_true", help="empty the aarch64 numba cache first")
    p.add_argument("--warm", action="store_true", help="also time a second call of each case")
    p.add_argument("--cpu", default="cortex-a76",
                   help="core numba compiles for on the aarch64 side (default cortex-a76, the "
                        "Raspberry Pi 5's and Neoverse N1's; cortex-a72 is the Pi 4's; 'host' "
                        "leaves it to llvm, which sees only a generic core under qemu)")
    p.add_argument("--timeout", type=float, default=2400,
                   help="seconds the emulated run may take (default 2400)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    try:
        env = ensure_env(args.cache)
    except SetupError as e:
        print(f"test-arm: setup failed: {e}", file=sys.stderr)
        return 2
    setup_s = time.perf_counter() - t0

    BUILD.mkdir(parents=True, exist_ok=True)
    numba_cache = BUILD / "numba-cache"
    if args.cold:
        shutil.rmtree(numba_cache, ignore_errors=True)
    if not args.shared.is_dir():
        print(f"test-arm: {args.shared} absent: the MuLUT and SR-LUT cases are skipped")
    options = ["--shared", str(args.shared)]
    if args.warm:
        options.append("--warm")

    # a device compiles for its own core, as numba names it; under qemu llvm sees none
    arm_numba = {"NUMBA_CACHE_DIR": str(numba_cache)}
    if args.cpu != "host":
        arm_numba["NUMBA_CPU_NAME"] = args.cpu
    x86_env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    x86_env["PYTHONPATH"] = str(REPO)
    sides = {
        "x86_64": ([sys.executable, str(CASES)], x86_env),
        "aarch64": (env.command(str(CASES)), env.environ(REPO, **arm_numba)),
    }
    results, seconds = {}, {}
    try:
        for label, (cmd, side_env) in sides.items():
            out = BUILD / f"{label}.json"
            out.unlink(missing_ok=True)
            print(f"test-arm: running the cases on {label} ...", flush=True)
            results[label], seconds[label] = run_side(
                label, [*cmd, *options, "--out", str(out)], side_env, out, args.timeout)
    except SideFailed as e:
        print(f"test-arm: {e}", file=sys.stderr)
        return 2

    x86, arm = results["x86_64"], results["aarch64"]
    if arm["machine"] != "aarch64":
        print(f"test-arm: the emulated side reports machine {arm['machine']!r}", file=sys.stderr)
        return 2
    for case in arm["cases"]:
        if "skipped" in case:
            print(f"  skipped  {case['case']}: {case['skipped']}")
        else:
            warm = f", warm {case['warm_s']:.3f} s" if "warm_s" in case else ""
            print(f"  {case['sha256'][:16]}  {case['case']} -> {'x'.join(map(str, case['shape']))}"
                  f"  (aarch64 first call {case['first_s']:.2f} s{warm})")
    problems = compare(x86, arm)
    ran = sum("sha256" in c for c in arm["cases"])
    print(f"test-arm: setup {setup_s:.1f} s, x86 run {seconds['x86_64']:.1f} s, emulated aarch64 "
          f"run {seconds['aarch64']:.1f} s (python {arm['python']}, numpy {arm['numpy']}, "
          f"numba {arm['numba']} compiling for {args.cpu}, {arm['threads']} threads)")
    if problems:
        print("test-arm: FAILED, aarch64 and x86 differ:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"test-arm: OK, {ran} outputs identical on aarch64 and x86")
    return 0


if __name__ == "__main__":
    sys.exit(main())

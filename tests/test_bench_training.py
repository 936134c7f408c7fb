"""benchmarks/bench_training.py: figures on success, a named failure and exit 1 otherwise."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch", "2", "--crop", "12", "--nf", "4", "--steps", "1", "--threads", "1",
        "--precisions", "float32"]


def _bench(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_prints_the_precision_the_step_and_its_share_of_the_matmul_rate():
    out = _bench("--configs", "tiny", *TINY)
    assert out.returncode == 0, out.stderr
    assert "precision auto -> " in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("tiny "))
    # "tiny float32 s/step GFLOP/s mm of-mm%"; "float32 (auto)" where auto picks float32
    sps, gflops, mm, share = row.replace(" (auto)", "").split()[2:6]
    assert float(sps) > 0 and float(gflops) > 0 and float(mm) > 0 and share.endswith("%")


@pytest.mark.parametrize(("args", "message"), [
    (["--configs", "no_such_config"], "worker no_such_config float32 (glibc) crashed"),
    (["--configs", "tiny", "--timeout", "0.1"], "worker tiny float32 (glibc) timed out"),
])
def test_a_failed_worker_is_named_and_the_exit_status_is_1(args, message):
    out = _bench(*TINY, *args)
    assert out.returncode == 1
    assert message in out.stderr and "1 worker(s) failed" in out.stderr

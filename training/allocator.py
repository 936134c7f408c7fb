"""Run training under jemalloc when the machine has it.

PyTorch allocates CPU tensors with ``posix_memalign``.  glibc serves large aligned requests
with fresh pages every time (``mmap`` above 32 MB; below, from the top of the heap, where a
freed aligned block is not reused for the next request of the same size), so every large
tensor of every step is page-faulted anew: a 189 MB buffer costs 60 ms to first-touch against
6 ms to refill (measured on the 2-core VM), and a training step allocates gigabytes.  No
``mallopt`` setting changes that (``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD`` tried).  jemalloc
with page purging disabled keeps freed pages mapped and reuses them: no faults after the first
step.

The allocator is chosen at process start (``LD_PRELOAD``), so :func:`reexec_with_jemalloc`
re-executes the current command once under it.  ``RCLUT_ALLOCATOR=system`` opts out.  The
CLI does it for bf16 training only (``training.cli._maybe_jemalloc``): one float32 run under
these settings grew to 22 GB and was OOM-killed (not understood; the fused bf16 path's
allocations repeat exactly from step to step and stayed at 2.1 GB).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["JEMALLOC_CANDIDATES", "find_jemalloc", "reexec_with_jemalloc", "using_jemalloc"]

JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
# Never return pages to the OS (they are reused by the next step); background purging off.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,background_thread:false"
_MARK = "RCLUT_ALLOCATOR_REEXEC"


def find_jemalloc() -> str | None:
    for cand in JEMALLOC_CANDIDATES:
        if Path(cand).is_file():
            return cand
    return None


def using_jemalloc() -> bool:
    """Whether jemalloc is loaded in this process (from /proc/self/maps; Linux only)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "libjemalloc" in maps


def reexec_with_jemalloc(module: str, argv: list[str]) -> None:
    """Replace this process by ``python -m module argv...`` under jemalloc, if it helps.

    Returns (doing nothing) when jemalloc is already loaded, is not installed, was refused with
    ``RCLUT_ALLOCATOR=system``, or a re-exec already happened (no loops).
    """
    if os.environ.get("RCLUT_ALLOCATOR", "") == "system" or os.environ.get(_MARK):
        return
    if not sys.platform.startswith("linux") or using_jemalloc():
        return
    lib = find_jemalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env[_MARK] = "1"
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)

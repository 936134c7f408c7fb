"""Helpers for tests that drive a training command in a subprocess."""
from __future__ import annotations

import time
from pathlib import Path


def wait_for_log_lines(log: Path, n: int, timeout: float = 120.0) -> None:
    """Return once ``log`` holds ``n`` lines (or after ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < n):
        time.sleep(0.2)

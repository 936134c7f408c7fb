"""``kernels.threads.run_tasks``: every task once, in contiguous ranges, one per thread."""
import threading

import numba
import pytest

from rclut_numba.kernels.threads import run_tasks

MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def _recorded_ranges(n_tasks: int, threads: int) -> list[tuple[int, int, int]]:
    ranges = []
    lock = threading.Lock()

    def kernel(lo, hi, tag):
        assert tag == "args pass through"
        with lock:
            ranges.append((lo, hi, threading.get_ident()))

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        run_tasks(kernel, n_tasks, "args pass through")
    finally:
        numba.set_num_threads(before)
    return sorted(ranges)


@pytest.mark.parametrize("threads", sorted({1, min(2, MAX_THREADS), MAX_THREADS}))
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 7])
def test_every_task_runs_once_in_one_range_per_thread(n_tasks, threads):
    ranges = _recorded_ranges(n_tasks, threads)
    assert len(ranges) == min(threads, n_tasks)
    assert [lo for lo, _, _ in ranges] == [0] + [hi for _, hi, _ in ranges[:-1]]  # contiguous
    assert ranges[-1][1] == n_tasks
    assert all(hi > lo for lo, hi, _ in ranges)
    assert len({ident for _, _, ident in ranges}) == len(ranges)  # each on its own thread


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs 2 numba threads")
def test_an_error_on_another_thread_is_raised_in_the_caller():
    def kernel(lo, hi):
        if lo > 0:
            raise IndexError(f"range {lo}..{hi}")

    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        with pytest.raises(IndexError, match="range 2..4"):
            run_tasks(kernel, 4)
    finally:
        numba.set_num_threads(before)

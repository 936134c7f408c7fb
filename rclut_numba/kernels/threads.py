"""Runs a serial kernel's tasks on several threads: numba's thread count, Python threads.

The kernels run this way are compiled with ``nogil=True``, so the threads run them in parallel;
:mod:`rclut_numba.kernels.options` says why the largest kernel is not ``parallel=True``.
"""
import threading

import numba


def run_tasks(kernel, n_tasks: int, *args) -> None:
    """``kernel(lo, hi, *args)`` over tasks ``0 .. n_tasks``, split into as many contiguous
    ranges as ``numba.get_num_threads()`` (at most one per task), as a static ``prange`` splits.

    The first range runs in the calling thread, the others on threads started for this call
    (a few tens of microseconds each; nothing is kept alive that a forked process could
    inherit half-dead).  The first exception raised by any range is re-raised here.
    """
    n = max(1, min(numba.get_num_threads(), n_tasks))
    cuts = [k * n_tasks // n for k in range(n + 1)]
    errors: list[BaseException] = []

    def run(lo: int, hi: int) -> None:
        try:
            kernel(lo, hi, *args)
        except BaseException as e:  # handed to the calling thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(cuts[k], cuts[k + 1]), daemon=True)
               for k in range(1, n)]
    for t in threads:
        t.start()
    try:
        run(cuts[0], cuts[1])
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]

"""Compile options for every kernel, decided in one place.

``cache=True`` keys the on-disk cache on the kernel's own module, so each kernel and the helpers
it calls live in one module.  ``fastmath`` stays off: all arithmetic is integer and exact anyway.
"""
from numba import njit

SERIAL = dict(cache=True, nogil=True, boundscheck=False)
PARALLEL = dict(SERIAL, parallel=True)


def serial_jit(fn):
    return njit(**SERIAL)(fn)


def parallel_jit(fn):
    return njit(**PARALLEL)(fn)

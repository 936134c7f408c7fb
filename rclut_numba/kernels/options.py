"""Compile options for every kernel, decided in one place.

``cache=True`` keys the on-disk cache on the kernel's own module, so each kernel and the helpers
it calls live in one module.  ``fastmath`` stays off: the arithmetic is integer and exact, but
for ``srlut_float``'s float division and multiplication, which must round as IEEE says.

No kernel gets a C-callable wrapper (``no_cfunc_wrapper``): nothing calls them from C, and
building one costs a first run about 0.3 s.  ``helper_jit`` is for functions that only other
kernels call: numba links a helper's LLVM code into each caller, so a CPython wrapper for it
would never be used either.  ``inlined_jit`` is for the large helpers that each kernel calls
once: numba copies them into the caller before typing, so they get no library of their own,
which a first run would optimise and compile to machine code and then again inside the caller
(LLVM does not inline them: they are too large).  Inlining helpers with several call sites
costs more in numba's typing than it saves in LLVM.

``parallel=True`` costs the first run most where the loop body is large: numba links the body
into four LLVM modules (the gufunc, two wrappers, the kernel) and optimises and compiles each to
machine code.  The largest kernel (``lut_stage.lut_two_stages``) is therefore serial over a
range of tasks and run on threads by :func:`rclut_numba.kernels.threads.run_tasks` (it releases
the GIL): the same machine code, compiled once.
"""
from numba import njit

SERIAL = dict(cache=True, nogil=True, boundscheck=False, no_cfunc_wrapper=True)
PARALLEL = dict(SERIAL, parallel=True)
HELPER = dict(SERIAL, no_cpython_wrapper=True)
INLINED = dict(SERIAL, inline="always")


def serial_jit(fn):
    return njit(**SERIAL)(fn)


def parallel_jit(fn):
    return njit(**PARALLEL)(fn)


def helper_jit(fn):
    return njit(**HELPER)(fn)


def inlined_jit(fn):
    return njit(**INLINED)(fn)

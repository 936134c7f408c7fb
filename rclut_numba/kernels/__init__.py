"""numba kernels: they compute and trust their inputs; ``rclut_numba.engine`` validates, converts.

Compile options are decided once, in :mod:`rclut_numba.kernels.options`.
"""

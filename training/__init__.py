"""PyTorch training side of rclut_numba: networks built from a ModelSpec, data, training loop,
CLI (``rclut-train``).  Imports ``rclut_numba``; ``rclut_numba`` never imports this package."""

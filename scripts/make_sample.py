"""Make the bundled demo input from scikit-image's public-domain astronaut photo (NASA).

    python scripts/make_sample.py

Writes ``rclut_numba/samples/astronaut_lr.png``: the 512x512 photo downscaled x4 with the
project's MATLAB-style bicubic (the same degradation the models are trained on).
"""
from pathlib import Path

from skimage import data

from rclut_numba.bicubic import downscale
from rclut_numba.imaging import write_image

OUT = Path(__file__).resolve().parents[1] / "rclut_numba" / "samples" / "astronaut_lr.png"

if __name__ == "__main__":
    write_image(OUT, downscale(data.astronaut(), 4), force=True)
    print(f"wrote {OUT}")

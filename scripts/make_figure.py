"""The README picture: LR (nearest), bicubic, RC-LUT (default model), HR, on a licence-clean crop.

    python scripts/make_figure.py [--model PATH] [--out docs/comparison.png]

HR: scikit-image's public-domain astronaut photo (NASA); LR: its x4 MATLAB-style bicubic
downscale, i.e. the bundled sample.  PSNR (Y, shave 4) of each full image is printed and drawn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rclut_numba import load_model
from rclut_numba.bicubic import downscale, upscale
from rclut_numba.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle (default: the embedded model)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "comparison.png"))
    ap.add_argument("--crop", default="60,180,112", help="HR crop top,left,size")
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage import data

    hr = data.astronaut()
    lr = downscale(hr, 4)
    model = load_model(args.model)
    panels = [
        ("LR (nearest)", np.repeat(np.repeat(lr, 4, 0), 4, 1)),
        ("bicubic", upscale(lr, 4)),
        (model.spec.name, model.upscale(lr)),
        ("HR", hr),
    ]
    top, left, size = (int(v) for v in args.crop.split(","))
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (name, img) in zip(axes, panels, strict=True):
        label = name if name.startswith(("HR", "LR")) else f"{name}  {psnr(img, hr, 4):.2f} dB"
        print(label)
        ax.imshow(img[top:top + size, left:left + size], interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Two small licence-clean stand-ins for the held-out test sets, from scikit-image's own images.

    python scripts/stand_in_sets.py OUT [--force]

Writes ``OUT/drawn/HR/`` (line art, text scans, silhouettes, a chessboard: the kind of content
Manga109 stresses) and ``OUT/built/HR/`` (brick, buildings and machines: Urban100's kind), each a
benchmark folder for ``rclut eval`` or ``rclut-train eval-network --data``.  Images are the PNG
(or JPEG) files in the installed ``skimage/data/`` folder, alpha dropped, cropped from the top
left to a multiple of 12 so that one folder serves x2, x3 and x4.  Eleven images are a weak
signal: read them per image (docs/history.md, the synthetic A/B).  Nothing here is committed;
the images come from the wheel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rclut_numba.imaging import read_image, write_image

SETS = {
    "drawn": ["chessboard_GRAY", "horse", "logo", "page", "phantom", "text"],
    "built": ["brick", "camera", "clock_motion", "motorcycle_left", "rocket"],
}
MULTIPLE = 12  # lcm of the scales 2, 3 and 4


def stand_in(path: Path) -> np.ndarray:
    """One stand-in HR image: uint8, alpha dropped, cropped to a multiple of ``MULTIPLE``."""
    img = read_image(path)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    h, w = (img.shape[0] // MULTIPLE) * MULTIPLE, (img.shape[1] // MULTIPLE) * MULTIPLE
    return np.ascontiguousarray(img[:h, :w])


def skimage_data_folder() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def build(out: Path, force: bool = False) -> list[Path]:
    src = skimage_data_folder()
    written = []
    for name, stems in SETS.items():
        folder = out / name / "HR"
        folder.mkdir(parents=True, exist_ok=True)
        for stem in stems:
            found = [p for p in (src / f"{stem}.png", src / f"{stem}.jpg") if p.is_file()]
            if not found:
                raise FileNotFoundError(f"{stem} is not in {src} (scikit-image changed?)")
            dest = folder / f"{stem}.png"
            write_image(dest, stand_in(found[0]), force=force)
            written.append(dest)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write drawn/HR and built/HR into")
    ap.add_argument("--force", action="store_true", help="overwrite images already there")
    args = ap.parse_args(argv)
    try:
        written = build(Path(args.out), force=args.force)
    except ImportError:
        print("stand_in_sets: error: needs scikit-image (pip install scikit-image)",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"stand_in_sets: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} images under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

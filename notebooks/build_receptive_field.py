"""Write notebooks/receptive_field.ipynb from the cells below; ``--execute`` also runs it in place.

The notebook is generated so that its text lives in a reviewable .py file; the committed .ipynb
holds the outputs of the last ``python notebooks/build_receptive_field.py --execute``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "receptive_field.ipynb"

CELLS = [
    ("md", r"""
# Receptive fields of SR-LUT, MuLUT and RC-LUT (x4)

A LUT model can only look at a few low-resolution (LR) pixels per output block: that is the
price of replacing a network by table reads.  This notebook draws, for each family, which LR
pixels can change an *anchor* pixel's 4 x 4 output block:

1. **theoretical**: derived from the `ModelSpec` alone
   (`rclut_numba.analysis.theoretical_receptive_field`): per branch the union over the 4
   rotations of the RC window + the pattern offsets, the union over a stage's branches, the
   Minkowski sum over the cascaded stages;
2. **empirical**: single LR pixels perturbed through the deployed engine
   (`empirical_receptive_field`), colour = mean |change| of the anchor's block (pixel values);
3. **gradient** (effective receptive field): |d (anchor block) / d input| of the PyTorch network
   (`training.networks.LUTNet`), when torch is installed.

Every grid is drawn in LR offsets from the anchor (the centre, row offset down, column offset
right): entry `(dy, dx)` is the pixel `dy` rows below and `dx` columns right of the anchor.
Then a visual comparison on scikit-image's public-domain astronaut.
"""),
    ("code", r"""
import time

T0 = time.perf_counter()   # the run time printed at the end includes the imports below
"""),
    ("code", r"""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.colors import LogNorm

import rclut_numba
from rclut_numba import analysis as rfa
from rclut_numba import load_model
from rclut_numba.bicubic import downscale, upscale
from rclut_numba.metrics import psnr, rgb_to_y
from rclut_numba.spec import ModelSpec, mulut_sdy_x2, rclut_paper, srlut

%config InlineBackend.figure_format = "png"
plt.rcParams["figure.dpi"] = 72

ROOT = Path(rclut_numba.__file__).resolve().parents[1]   # the checkout (editable install)
SHARED = ROOT.parent / "shared"                           # test data, when beside the checkout
SPECS = {"SR-LUT": srlut(), "MuLUT": mulut_sdy_x2(), "RC-LUT": rclut_paper()}
"""),
    ("md", r"""
## Sizes from the specs alone

Hand check: SR-LUT's S pattern reads a 2 x 2 square, and its four rotations make a **3 x 3**
field (9 pixels).  MuLUT-SDY-X2: one stage's S (3 x 3), D (the 9 points `{-2, 0, 2}^2`) and Y
(anchor, 4 diagonals, 8 knight moves) together fill the 5 x 5 square; two stages give
5 x 5 (+) 5 x 5 = **9 x 9** (81 pixels).  RC-LUT: stage 1 puts S behind RC windows up to 7 x 7,
which makes 8 x 8 per rotation and 9 x 9 over the rotations; stage 2 (1D behind 3 x 3, S behind
5 x 5, 1D behind 7 x 7) adds 7 x 7; 9 x 9 (+) 7 x 7 = **15 x 15** (225 pixels), 25 times
SR-LUT's field for about 1.3 times its table storage.  Storage counts every table at the
published sampling interval 16 (4-bit, 17 levels per input), RC tables included.
"""),
    ("code", r"""
THEORY = {name: rfa.theoretical_receptive_field(spec) for name, spec in SPECS.items()}
ROWS = rfa.receptive_field_table(SPECS.values())
display(Markdown(rfa.format_table(ROWS)))
"""),
    ("md", r"""
## The models

Trained tables are used where this checkout has them: a bundle under `rclut_numba/models/` (the
default RC-LUT) or `results/*/` (our SR-LUT and MuLUT baselines) with the family's layout, else
for MuLUT the published LUTs in `../shared/mulut/luts` (MIT).
Otherwise the family runs on **random tables** (`rfa.random_model`), which show what the layout
*can* see, not what a trained model does; the cell below says which is which.
"""),
    ("code", r"""
import os


def same_layout(a, b):
    return a.scale == b.scale and a.stages == b.stages

MODELS, SOURCE = {}, {}
bundles = (sorted((ROOT / "rclut_numba" / "models").glob("*.npz"))
           + sorted((ROOT / "results").glob("*/*.npz")))
candidates = bundles + [SHARED / "mulut" / "luts"]
for name, spec in SPECS.items():
    for path in candidates:
        if not path.exists():
            continue
        try:
            model = load_model(path)
        except Exception as e:  # a broken or foreign bundle: report it and keep looking
            print(f"skipping {path.name}: {e}")
            continue
        if same_layout(model.spec, spec):
            MODELS[name], SOURCE[name] = model, f"trained: `{os.path.relpath(path, ROOT)}`"
            break
    else:
        MODELS[name], SOURCE[name] = rfa.random_model(spec, seed=0), "**random tables**"
display(Markdown("\n".join(f"- {name}: {SOURCE[name]}, {MODELS[name].spec.describe()}"
                           for name in SPECS)))
"""),
    ("md", r"""
## Measured fields

The LR test image is the luminance of the astronaut (LR, made with the project's MATLAB-style
bicubic downscaler).  Each trial perturbs a lattice of pixels, spaced so that no output block
sees two of them, to other random values; `grid > 0` is the measured field.  The measurement
must lie inside the theory and, for random tables, fill it.  A trained model may measure less
than its theory: where a table is flat over the values the image holds (or a window position's
weight has shrunk below one threshold step), a perturbation there does not reach the output.
"""),
    ("code", r"""
try:
    from skimage import data
    HR = data.astronaut()                      # public domain, ships inside scikit-image
    LR = downscale(HR, 4)
except ImportError:                            # same LR image, packaged with rclut_numba
    import imageio.v3 as iio
    HR, LR = None, iio.imread(ROOT / "rclut_numba" / "samples" / "astronaut_lr.png")
LR_Y = np.rint(rgb_to_y(LR)).astype(np.uint8)         # 16..235: no clipping needed

EMPIRICAL = {name: rfa.empirical_receptive_field(model, image=LR_Y, trials=8, seed=0)
             for name, model in MODELS.items()}
measured = [rfa.field_pixels(EMPIRICAL[n][0]) for n in SPECS]
inside = ["yes" if not ((EMPIRICAL[n][0] > 0) & ~THEORY[n][0]).any() else "NO" for n in SPECS]
boxes = ["{} x {}".format(*rfa.bounding_box(EMPIRICAL[n][0])) for n in SPECS]
display(Markdown(rfa.format_table(ROWS, extra={"measured pixels": measured,
                                               "measured box": boxes, "inside theory": inside})))
"""),
    ("md", r"""
## Gradient-based effective receptive field (PyTorch)

For the networks the LUTs are sampled from: the mean over LR crops of |d (sum of the centre
anchor's 4 x 4 output block) / d input pixel|, through the straight-through rounding the
training uses.  Each family uses the network checkpoint committed under `results/*/` (the
networks our tables were sampled from) when present, else for MuLUT its published weights
(`../shared/mulut/network_2022.npz`); a network without trained weights is freshly initialised
(seed 0), which shows the layout's reach rather than learned behaviour.  Skipped when torch is
not installed.
"""),
    ("code", r"""
GRADIENT, NET_SOURCE = {}, {}
try:
    import torch

    from training.networks import LUTNet, load_mulut_npz
    from training.train import load_checkpoint, model_from_checkpoint
except ImportError as e:
    display(Markdown(f"*torch is not available ({e}): gradient fields skipped.*"))
else:
    torch.set_num_threads(1)   # tiny crops: threads would only contend with other work
    rng = np.random.default_rng(0)
    # published networks only: a live run's resume_point.pt is not what any tables came from
    checkpoints = [(p, load_checkpoint(p))
                   for p in sorted((ROOT / "results").glob("*/network_step*.pt"))]
    checkpoints.sort(key=lambda pc: -int(pc[1]["step"]))   # a family's latest network first
    for name, spec in SPECS.items():
        torch.manual_seed(0)
        net = LUTNet(spec).eval()
        NET_SOURCE[name] = "untrained"
        weights = SHARED / "mulut" / "network_2022.npz"
        # the network of the deployed tables' kind first (a residual last stage or not, its
        # orientations), then the latest
        deployed = MODELS[name].spec

        def kind_mismatch(pc, deployed=deployed):
            src = ModelSpec.from_json(pc[1]["spec"])
            return (src.residual != deployed.residual, src.orientations != deployed.orientations)
        ranked = sorted(checkpoints, key=kind_mismatch)
        for path, ck in ranked:
            if same_layout(ModelSpec.from_json(ck["spec"]), spec):
                net = model_from_checkpoint(ck).eval()
                NET_SOURCE[name] = f"trained: `{os.path.relpath(path, ROOT)}` (step {ck['step']})"
                break
        else:
            if name == "MuLUT" and weights.is_file():
                load_mulut_npz(net, weights)
                NET_SOURCE[name] = "published weights"
        m = spec.margin
        side = 4 * m + 1                           # the centre anchor's field stays inside
        ys, xs = rng.integers(0, LR_Y.shape[0] - side, (2, 8))
        crops = np.stack([LR_Y[y:y + side, x:x + side] for y, x in zip(ys, xs, strict=True)])
        x = torch.tensor(crops / 255.0, dtype=torch.float32)[:, None].requires_grad_(True)
        c, s = side // 2, spec.scale
        net(x)[:, :, s * c:s * c + s, s * c:s * c + s].sum().backward()
        GRADIENT[name] = rfa.crop_field(x.grad.abs().mean(0)[0].numpy(), (c, c), m)
    display(Markdown(rfa.format_table(ROWS, extra={
        "network": [NET_SOURCE[n] for n in SPECS],
        "gradient pixels": [rfa.field_pixels(GRADIENT[n]) for n in SPECS]})))
"""),
    ("code", r"""
M = max(m for _, m in THEORY.values())   # one scale for every panel, so sizes compare
cols = ["theoretical", "empirical: mean |change|"] + (["gradient: mean |d/dx|"] if GRADIENT else [])
fig, axes = plt.subplots(len(SPECS), len(cols), figsize=(3.3 * len(cols), 3.2 * len(SPECS)),
                         squeeze=False)
for row, name in enumerate(SPECS):
    grid, m = THEORY[name]
    panels = [grid.astype(float), EMPIRICAL[name][0]] + ([GRADIENT[name]] if GRADIENT else [])
    for col, (title, values) in enumerate(zip(cols, panels, strict=True)):
        ax = axes[row, col]
        shown = np.ma.masked_equal(values, 0)            # outside the field: blank
        top = shown.max()
        norm = None if col == 0 else LogNorm(vmin=max(top * 1e-3, shown.min()), vmax=top)
        im = ax.imshow(shown, cmap="Greys" if col == 0 else "viridis", norm=norm,
                       vmin=0 if col == 0 else None, vmax=1.5 if col == 0 else None,
                       extent=(-m - 0.5, m + 0.5, m + 0.5, -m - 0.5), interpolation="nearest")
        ax.plot(0, 0, "r+", ms=8)                        # the anchor
        ax.set_xlim(-M - 0.5, M + 0.5)
        ax.set_ylim(M + 0.5, -M - 0.5)
        ax.set_title(f"{name}: {title}\n{rfa.field_pixels(values)} px, "
                     "{} x {}".format(*rfa.bounding_box(values)), fontsize=9)
        if col:
            fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()
plt.show()
"""),
    ("md", r"""
## A visual crop

HR: scikit-image's astronaut (public domain); LR: the project's MATLAB-compatible bicubic
downscale by 4; each model upscales the three RGB channels independently.  PSNR is on Y with a
4-pixel border removed, over the whole 512 x 512 image.  Models on random tables produce noise
by construction: they are there to show the pipeline, not a result.
"""),
    ("code", r"""
from matplotlib_inline.backend_inline import set_matplotlib_formats

set_matplotlib_formats("jpeg", pil_kwargs={"quality": 90})   # photos: a fraction of PNG's size

outputs = {"bicubic": upscale(LR, 4)}
for name, model in MODELS.items():
    outputs[f"{name} ({'random' if 'random' in SOURCE[name] else 'trained'})"] = model.upscale(LR)
if HR is not None:
    outputs["HR"] = HR
crop = (slice(60, 220), slice(150, 310))                 # the face
fig, axes = plt.subplots(1, len(outputs), figsize=(3.0 * len(outputs), 3.4))
for ax, (title, img) in zip(axes, outputs.items(), strict=True):
    ax.imshow(img[crop])
    score = "" if HR is None or title == "HR" else f"\n{psnr(img, HR, shave=4):.2f} dB"
    ax.set_title(title + score, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()
"""),
    ("code", r"""
print(f"notebook ran in {time.perf_counter() - T0:.1f} s")
"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, text in CELLS:
        text = text.strip("\n")
        nb.cells.append(new_markdown_cell(text) if kind == "md" else new_code_cell(text))
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> None:
    from nbclient import NotebookClient
    # record_timing off: committed outputs should not change with every run's clock
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(cwd)}}).execute()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--execute", action="store_true", help="run it and save the outputs")
    parser.add_argument("--out", type=Path, default=NOTEBOOK)
    args = parser.parse_args(argv)
    nb = build()
    if args.execute:
        t = time.perf_counter()
        execute(nb, HERE)
        print(f"executed in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    nbformat.write(nb, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

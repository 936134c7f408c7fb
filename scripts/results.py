"""Write the README results table: our models, the published MuLUT LUTs and the papers' figures.

    python scripts/results.py [--shared ../shared] [--readme README.md]
    python scripts/results.py --compare LABEL=BUNDLE ... --out results/NAME.md   (any bundles)

Every row but the papers' is measured here, now, with ``rclut_numba.evaluation.evaluate``
(PSNR on Y shaved by 4, SSIM on Y; LR from the benchmark's own files or our MATLAB-style
bicubic).  Our bundles: the default model in ``rclut_numba/models/``, the baselines in
``results/``; a missing one is left out and said so.  The table goes between the
``results:start`` / ``results:end`` markers of the README and into ``results/results.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rclut_numba.bicubic import upscale as bicubic_upscale
from rclut_numba.bundle import bundle_size_kb
from rclut_numba.engine import load_model
from rclut_numba.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]


SETS = ("Set5", "Set14", "B100")
PAPERS = [  # x4 PSNR as published; storage as published
    ("RC-LUT (paper)", (30.72, 27.67, 26.95), 1549),
    ("MuLUT (paper)", (30.60, 27.60, 26.86), 4159),
    ("SR-LUT (paper)", (29.82, 27.01, 26.53), 1304),
]
OURS = [  # (row name, bundle relative to the repository root)
    ("SR-LUT (ours)", "results/srlut_x4/srlut_x4.npz"),
    ("MuLUT-SDY-X2 (ours)", "results/mulut_x4/mulut_x4.npz"),
    # the previous default: the same network budget as the two baselines above
    ("RC-LUT (ours, at the baselines' budget)", "results/rclut_x4_step1000/rclut_x4_step1000.npz"),
    # the plain layout's best: 20000 network steps, the default until the residual last stage
    ("RC-LUT (ours, plain last stage)", "results/rclut_x4/rclut_x4.npz"),
    # the previous default: a residual snapshot at step 4000, at peak lr (no cooldown)
    ("RC-LUT (ours, residual, step 4000 at peak lr)",
     "results/rclut_x4_residual_step4000/rclut_x4_residual_step4000.npz"),
    # its step count is the training column's, read from the bundle's budget stamp
    ("RC-LUT (ours, default model: residual, cooldown branch)",
     "rclut_numba/models/rclut_x4.npz"),
]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def scores(fn, shared: Path, scale: int = 4) -> list[str]:
    cells = []
    for name in SETS:
        d = shared / "data" / "benchmark" / name
        r = evaluate(fn, d, scale, out=lambda _s: None)
        cells.append(f"{r['mean_psnr']:.2f} / {r['mean_ssim']:.4f}")
        print(f"  {name}: {cells[-1]}", flush=True)
    return cells


def budget(spec) -> str:
    t = spec.extra.get("training")
    if not t:
        return ""
    text = f"{t.get('steps', '?')} steps, {t.get('cpu_hours', '?')} CPU h"
    if t.get("finetune_steps"):
        ft_hours = t.get("finetune_cpu_hours")
        text += f" + {t['finetune_steps']} LUT ft steps"
        text += f", {ft_hours} CPU h" if ft_hours else ""
    return text


def compare(items: list[str], out: str | None, shared: Path, header: str) -> None:
    if not out:
        sys.exit("results: --compare needs --out FILE.md")
    pairs = [item.partition("=")[::2] for item in items]
    for item, (label, path) in zip(items, pairs, strict=True):
        if not label or not path or not Path(path).exists():
            sys.exit(f"results: {item!r}: expected LABEL=BUNDLE with an existing bundle")
    rows = []
    for label, path in pairs:
        print(label, flush=True)
        m = load_model(path)
        # the label states the budget: a bundle made along the way may carry a stale one
        kb = bundle_size_kb(m.spec, m.arrays)
        rows.append([label, *scores(m.upscale, shared), f"{kb:.0f}", ""])
    table = "\n".join([header] + ["| " + " | ".join(r) + " |" for r in rows])
    Path(out).write_text(table + "\n")
    print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--compare", nargs="+", metavar="LABEL=BUNDLE",
                    help="score these bundles into --out instead of writing the README table")
    ap.add_argument("--out", help="markdown file for --compare")
    args = ap.parse_args()
    shared = Path(args.shared)
    if not (shared / "data" / "benchmark").is_dir():
        sys.exit(f"results: {shared}/data/benchmark not found; "
                 "the benchmark sets live in ../shared")
    header = ("| model | Set5 PSNR / SSIM | Set14 PSNR / SSIM | B100 PSNR / SSIM | tables KB "
              "| training |\n|---|---|---|---|---|---|")
    if args.compare:
        compare(args.compare, args.out, shared, header)
        return
    rows, missing = [], []
    print("bicubic", flush=True)
    rows.append(["bicubic", *scores(lambda lr: bicubic_upscale(lr, 4), shared), "0", ""])
    for label, file in OURS:
        path = ROOT / file
        if not path.is_file():
            missing.append(label)
            continue
        print(label, flush=True)
        m = load_model(path)
        rows.append([label, *scores(m.upscale, shared), f"{bundle_size_kb(m.spec, m.arrays):.0f}",
                     budget(m.spec)])
    pub = shared / "mulut" / "luts"
    if pub.is_dir():
        print("published MuLUT LUTs", flush=True)
        m = load_model(pub)
        rows.append(["MuLUT published LUTs, our engine", *scores(m.upscale, shared),
                     f"{bundle_size_kb(m.spec, m.arrays):.0f}", "MuLUT release"])
    for label, psnrs, kb in PAPERS:
        rows.append([label, *(f"{p:.2f}" for p in psnrs), str(kb), "as published"])
    lines = [header] + ["| " + " | ".join(r) + " |" for r in rows]
    if missing:
        lines.append("")
        lines.append("Not trained yet (no bundle): " + ", ".join(missing) + ".")
    table = "\n".join(lines)
    out = ROOT / "results" / "results.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table + "\n")
    json.dump({"rows": rows}, open(ROOT / "results" / "results.json", "w"), indent=1)
    readme = Path(args.readme)
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{table}\n{END}{tail}")
        print(f"updated {readme}")
    print(table)


if __name__ == "__main__":
    main()

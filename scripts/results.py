"""Write the README results tables, one per scale: our models, the published LUTs (SR-LUT's at
x2, x3 and x4, MuLUT's at x4) and the papers' figures (x4).

    python scripts/results.py [--shared ../shared] [--readme README.md] [--scale S ...]
    python scripts/results.py --compare LABEL=BUNDLE ... --out results/NAME.md   (any bundles)

Every row but the papers' is measured here, now, with ``rclut_numba.evaluation.evaluate``
(PSNR on Y shaved by the scale, SSIM on Y; LR from the benchmark's own ``LR_bicubic/X{s}`` files
where it has them, else our MATLAB-style bicubic of the HR cropped to a multiple of the scale).
Our bundles: the default models in ``rclut_numba/models/``, the x4 baselines in ``results/``;
a missing one is left out and said so.  SR-LUT's published LUTs run with SR-LUT's own
arithmetic (at x4 also with the integer one).  The x4 table goes between the ``results:start``
/ ``results:end`` markers of the README and into ``results/results.md``; the x2 and x3 tables
between ``results-x{s}:start`` / ``results-x{s}:end`` and into ``results/results_x{s}.md``.
``--scale`` (repeatable) regenerates only those tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rclut_numba.bicubic import upscale as bicubic_upscale
from rclut_numba.bundle import bundle_size_kb
from rclut_numba.engine import embedded_model_path, load_model
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
    # the superseded RC-LUT defaults and the A/B arms left results/: their figures are rows of
    # docs/history.md ("Arms and superseded models"), their files in git history
    # its step count is the training column's, read from the bundle's budget stamp
    ("RC-LUT (ours, default model: residual, eight orientations)",
     "rclut_numba/models/rclut_x4.npz"),
]
SCALES = (2, 3, 4)
SRLUT_LUT = "srlut/Model_S_x{scale}_4bit_int8.npy"  # SR-LUT's published LUTs, in ../shared
HEADER = ("| model | Set5 PSNR / SSIM | Set14 PSNR / SSIM | B100 PSNR / SSIM | tables KB "
          "| training |\n|---|---|---|---|---|---|")


def markers(scale: int) -> tuple[str, str]:
    """The README markers around the table of ``scale`` (x4's predate the other scales)."""
    tag = "results" if scale == 4 else f"results-x{scale}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


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
    if t.get("init_from"):  # a warm start: name the run whose network it started from
        text = f"{Path(t['init_from']).parent.name} + " + text
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
        rows.append([label, *scores(m.upscale, shared, m.scale), f"{kb:.0f}", ""])
    table = "\n".join([header] + ["| " + " | ".join(r) + " |" for r in rows])
    Path(out).write_text(table + "\n")
    print(table)


def model_row(label: str, model, shared: Path, training: str | None = None) -> list[str]:
    """A measured row: scores at the model's scale, its tables' KB, its training budget."""
    print(label, flush=True)
    kb = bundle_size_kb(model.spec, model.arrays)
    return [label, *scores(model.upscale, shared, model.scale), f"{kb:.0f}",
            budget(model.spec) if training is None else training]


def bicubic_row(shared: Path, scale: int) -> list[str]:
    print(f"bicubic x{scale}", flush=True)
    return ["bicubic", *scores(lambda lr: bicubic_upscale(lr, scale), shared, scale), "0", ""]


def srlut_rows(shared: Path, scale: int) -> list[list[str]]:
    """SR-LUT's published LUT of ``scale``, run as SR-LUT runs it; at x4 also with the integer
    arithmetic (the x4 table compares the two). None when ../shared lacks the file."""
    path = shared / SRLUT_LUT.format(scale=scale)
    if not path.is_file():
        print(f"  {path} not found: no SR-LUT row", flush=True)
        return []
    rows = [model_row("SR-LUT published LUT, SR-LUT's arithmetic",
                      load_model(path, arithmetic="srlut"), shared, "SR-LUT release")]
    if scale == 4:
        rows.append(model_row("SR-LUT published LUT, integer arithmetic",
                              load_model(path, arithmetic="integer"), shared, "SR-LUT release"))
    return rows


def x4_rows(shared: Path) -> tuple[list[list[str]], list[str]]:
    rows, missing = [bicubic_row(shared, 4)], []
    for label, file in OURS:
        path = ROOT / file
        if not path.is_file():
            missing.append(label)
            continue
        rows.append(model_row(label, load_model(path), shared))
    pub = shared / "mulut" / "luts"
    if pub.is_dir():
        rows.append(model_row("MuLUT published LUTs, our engine", load_model(pub), shared,
                              "MuLUT release"))
    rows += srlut_rows(shared, 4)
    for label, psnrs, kb in PAPERS:
        rows.append([label, *(f"{p:.2f}" for p in psnrs), str(kb), "as published"])
    return rows, missing


def other_scale_rows(shared: Path, scale: int) -> tuple[list[list[str]], list[str]]:
    """x2 / x3: bicubic, SR-LUT's published LUT, and our embedded default when there is one."""
    rows, missing = [bicubic_row(shared, scale)], []
    rows += srlut_rows(shared, scale)
    label = "RC-LUT (ours, default model)"
    path = embedded_model_path(scale)
    if path.is_file():
        rows.append(model_row(label, load_model(path), shared))
    else:
        missing.append(label)
    return rows, missing


def publish(scale: int, rows: list[list[str]], missing: list[str], readme: Path) -> None:
    """Write the table of ``scale`` to results/ and between its README markers."""
    lines = [HEADER] + ["| " + " | ".join(r) + " |" for r in rows]
    if missing:
        lines.append("")
        lines.append("Not trained yet (no bundle): " + ", ".join(missing) + ".")
    table = "\n".join(lines)
    stem = "results" if scale == 4 else f"results_x{scale}"
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.md").write_text(table + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"scale": scale, "rows": rows}, indent=1))
    start, end = markers(scale)
    text = readme.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")
        print(f"updated the x{scale} table of {readme}")
    else:
        print(f"{readme} has no {start} / {end} markers: x{scale} table not placed")
    print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--compare", nargs="+", metavar="LABEL=BUNDLE",
                    help="score these bundles into --out instead of writing the README table")
    ap.add_argument("--out", help="markdown file for --compare")
    ap.add_argument("--scale", type=int, action="append", choices=SCALES,
                    help="regenerate only this scale's table (repeatable; default: all)")
    args = ap.parse_args()
    shared = Path(args.shared)
    if not (shared / "data" / "benchmark").is_dir():
        sys.exit(f"results: {shared}/data/benchmark not found; "
                 "the benchmark sets live in ../shared")
    if args.compare:
        compare(args.compare, args.out, shared, HEADER)
        return
    for scale in sorted(set(args.scale or SCALES), reverse=True):
        rows, missing = x4_rows(shared) if scale == 4 else other_scale_rows(shared, scale)
        publish(scale, rows, missing, Path(args.readme))


if __name__ == "__main__":
    main()

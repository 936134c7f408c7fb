"""Side-by-side validation curves of training runs (an A/B table), from their ``log.jsonl``.

    python scripts/compare_runs.py LABEL=RUN [LABEL=RUN ...] [--every 500] [--out FILE.md]

Each RUN is a run folder (or a ``log.jsonl``).  One row per validated step that is a multiple
of ``--every``; one column per run and validation set (``"val"`` records of several sets, else
the single ``val_psnr`` as ``PSNR``; ``<set> EMA`` columns for a weight EMA), plus each run's
median s/step.  Steps a run has not reached yet are left blank, so a table of runs still going
is honest about where each one stands.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from training.train import validation_psnrs


def read_log(path: Path) -> list[dict]:
    log = path / "log.jsonl" if path.is_dir() else path
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def curves(records: list[dict]) -> dict[int, dict[str, float]]:
    """``{step: {set name: PSNR}}`` of a run's validation records (the last one per step)."""
    return {int(r["step"]): validation_psnrs(r) for r in records if "val_psnr" in r}


def table(runs: dict[str, list[dict]], every: int) -> str:
    cur = {label: curves(recs) for label, recs in runs.items()}
    sets = sorted({s for c in cur.values() for v in c.values() for s in v})
    steps = sorted({s for c in cur.values() for s in c if s % every == 0})
    head = "| step | " + " | ".join(f"{label} {s}" for label in runs for s in sets) + " |"
    lines = [head, "|---:|" + "---:|" * (len(runs) * len(sets))]
    for step in steps:
        cells = []
        for label in runs:
            v = cur[label].get(step, {})
            cells += [f"{v[s]:.4f}" if s in v else "" for s in sets]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    speeds = []
    for label, recs in runs.items():
        sps = [r["s_per_step"] for r in recs if "s_per_step" in r]
        done = max((r["step"] for r in recs if "step" in r), default=0)
        med = f"{statistics.median(sps):.2f} s/step" if sps else "no timed steps"
        speeds.append(f"{label}: {done} steps, median {med}")
    return "\n".join(lines) + "\n\n" + "; ".join(speeds) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN")
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--out", help="write the table here (default: stdout)")
    args = ap.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            print(f"compare_runs: error: expected LABEL=RUN, got {item!r}", file=sys.stderr)
            return 2
        try:
            runs[label] = read_log(Path(path))
        except OSError as e:
            print(f"compare_runs: error: {e}", file=sys.stderr)
            return 2
    text = table(runs, args.every)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a model's training budget into its bundle (``spec.extra["training"]``), read from the
run logs, so ``make results`` can print it beside the scores.

    python scripts/stamp_budget.py BUNDLE --train RUN [--finetune RUN[@N] ...] --threads N -o OUT
                                   [--commands DIR]

RUN folders hold the ``log.jsonl``, ``config.toml`` and ``last.pt`` that ``rclut-train train``
and ``rclut-train finetune`` write; the schedule is read from the network run's ``last.pt``.
Wall time is each logged interval's steps x the median seconds per step around it; CPU hours
are wall hours x the threads the run used (``--threads``, or ``@N`` after a fine-tuning run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tomllib
from pathlib import Path

from rclut_numba.bundle import BundleError, load_bundle, save_bundle

ROOT = Path(__file__).resolve().parents[1]


def run_seconds(run: Path, window: int = 10) -> tuple[int, float]:
    """(last step, seconds) of a run: each logged interval's steps times the median seconds per
    step of the records within ``window`` of it.

    A median, not the logged times, so that time a run spent paused or sharing the cores with
    other jobs (benchmarks, tests) does not count as its cost; a local one, so that a run that
    changed speed on resuming (e.g. float32, then bfloat16) is charged each part's own speed."""
    log = run / "log.jsonl"
    if not log.is_file():
        raise BundleError(f"{log} not found")
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    timed = [r for r in recs if "s_per_step" in r]
    if not timed:
        raise BundleError(f"{log} has no timed steps")
    timed.sort(key=lambda r: r["step"])
    speeds = [r["s_per_step"] for r in timed]
    seconds, previous = 0.0, 0
    for i, r in enumerate(timed):
        local = statistics.median(speeds[max(0, i - window):i + window + 1])
        seconds += (r["step"] - previous) * local
        previous = r["step"]
    return previous, seconds


def final_train_config(run: Path) -> dict:
    """The ``[train]`` settings of a run's last checkpoint: a resumed run may have changed its
    schedule (``--steps``, ``--set``), while ``config.toml`` keeps what it was started with."""
    last = run / "last.pt"
    if last.is_file():
        import torch  # only here: the rest of the script reads plain files

        return dict(torch.load(last, map_location="cpu", weights_only=False)["train_config"])
    return tomllib.loads((run / "config.toml").read_text())["train"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--train", required=True, help="network training run folder")
    ap.add_argument("--finetune", nargs="*", default=[],
                    help="LUT fine-tuning run folders, each optionally @THREADS")
    ap.add_argument("--threads", type=int, required=True, help="CPU threads every run used")
    ap.add_argument("--data", default="../shared/data/train (T91, BSD200, DIV2K_gray; "
                                       "407 images >= 192 px)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--commands", help="folder of the exact commands and logs, recorded in the "
                                       "bundle (default: results/OUTPUT_STEM/)")
    args = ap.parse_args()
    try:
        spec, arrays = load_bundle(args.bundle)
        train = Path(args.train)
        steps, wall = run_seconds(train)
        cfg = final_train_config(train)
        ft_steps, ft_wall, ft_cpu = 0, 0.0, 0.0
        for item in args.finetune:
            run, _, threads = item.partition("@")
            s, w = run_seconds(Path(run))
            ft_steps, ft_wall = ft_steps + s, ft_wall + w
            ft_cpu += w * (int(threads) if threads else args.threads)
        hours, ft_hours = wall / 3600, ft_wall / 3600
        spec.extra["training"] = {
            "steps": steps, "schedule_steps": cfg["steps"], "batch_size": cfg["batch_size"],
            "crop": cfg["crop"], "nf": cfg["nf"], "data": args.data, "threads": args.threads,
            "wall_hours": round(hours, 2), "cpu_hours": round(hours * args.threads, 1),
            "finetune_steps": ft_steps, "finetune_wall_hours": round(ft_hours, 2),
            "finetune_cpu_hours": round(ft_cpu / 3600, 1),
            "commands": args.commands or f"results/{Path(args.output).stem}/",
        }
        save_bundle(args.output, spec, arrays)
    except (BundleError, OSError, KeyError, ValueError) as e:
        print(f"stamp_budget: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {steps} steps ({hours:.2f} h) + {ft_steps} LUT steps "
          f"({ft_hours:.2f} h) on {args.threads} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())

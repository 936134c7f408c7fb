"""How far LUT bundles move flat grey, and how far their last stage could at best.

For each bundle: the engine's flat-field shift (``rclut_numba.analysis.flat_field_deviation``),
then the flat images' inputs to the last stage (the RC codes of its windows, or the previous
stage's output where a branch has no window).  Levels whose inputs are equal must come out
equal, so a group of levels spanning ``a..b`` is moved by at least ``ceil((b - a) / 2)`` by any
last-stage tables: where a group spans 4 levels or more, no last stage brings flat grey within
1 level; the earlier stages (RC windows included, or the network) must separate them first.
A residual last stage adds each level to its correction, and every flat level wants the same
correction (0), so grouped levels constrain nothing there: its best is 0.

    python scripts/flat_field_study.py BUNDLE|CHECKPOINT.pt [...]

A training checkpoint (``.pt``) is measured as the float network (its output rounded); the
last-stage columns are then left blank.
"""
from __future__ import annotations

import argparse
import sys

import torch

from rclut_numba.analysis import flat_field_deviation
from rclut_numba.bundle import BundleError, load_bundle
from rclut_numba.engine import LutModel
from rclut_numba.spec import array_key
from training.lut_forward import LutForward, _exact_stage_output
from training.train import TrainError, load_checkpoint, model_from_checkpoint


def network_flat_shift(path):
    """Per grey level, the flat shift of a checkpoint's float network (output rounded)."""
    net = model_from_checkpoint(load_checkpoint(path)).eval()
    levels = torch.arange(256, dtype=torch.float32).reshape(256, 1, 1, 1)
    with torch.no_grad():
        out = torch.round(net(levels / 255.0)).clamp(0, 255)
    return (out - levels).abs().amax((1, 2, 3)).long().numpy()


def last_stage_groups(spec, arrays) -> list[list[int]]:
    """Grey levels grouped by the inputs their flat images give the last stage."""
    net = LutForward(spec, arrays)
    x = torch.arange(256, dtype=torch.float32).reshape(256, 1, 1, 1)
    last = len(spec.stages) - 1
    with torch.no_grad():
        for si in range(last):
            x = _exact_stage_output(net._stage_acc(si, x), *spec.stage_rescale(si))
        inputs = [(net._rc_map(array_key(last, bi), br.rc, x) if br.rc else x)
                  .flatten().round().long().tolist()
                  for bi, br in enumerate(spec.stages[last].branches)]
    groups: dict[tuple, list[int]] = {}
    for level, key in enumerate(zip(*inputs, strict=True)):
        groups.setdefault(key, []).append(level)
    return list(groups.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+")
    args = ap.parse_args(argv)
    print("| bundle | max shift | levels shifted > 1 | distinct last-stage inputs "
          "| best max shift of any last stage | levels that no last stage brings within 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.bundles:
        if path.endswith(".pt"):
            try:
                shift = network_flat_shift(path)
                print(f"| {path} (network) | {shift.max()} | {(shift > 1).sum()} | | | |")
            except TrainError as e:
                print(f"flat_field_study: {e}", file=sys.stderr)
                return 2
            continue
        try:
            spec, arrays = load_bundle(path)
        except BundleError as e:
            print(f"flat_field_study: {e}", file=sys.stderr)
            return 2
        shift = flat_field_deviation(LutModel(spec, arrays))
        groups = last_stage_groups(spec, arrays)
        bound = [0 if spec.residual else (max(g) - min(g) + 1) // 2 for g in groups]
        stuck = sum(len(g) for g, b in zip(groups, bound, strict=True) if b > 1)
        print(f"| {path} | {shift.max()} | {(shift > 1).sum()} | {len(groups)} | {max(bound)} "
              f"| {stuck} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

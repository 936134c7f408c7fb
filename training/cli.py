"""``rclut-train``: train LUT super-resolution networks and evaluate them.

  rclut-train train --config C --data DIR [DIR...] --out RUN [--resume] [--steps N]
                    [--device D] [--set KEY=VALUE ...]
  rclut-train eval-network --config C --weights W --data DIR

``--weights`` takes a run checkpoint (``RUN/last.pt``, ``RUN/best.pt``) or the published
MuLUT network (``network_2022.npz``).  Data-parallel training: ``torchrun --nproc_per_node N
-m training.cli train ...``.  Errors in the input (missing files, bad config) print one line to
stderr and exit with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rclut-train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network (or --resume a run)")
    t.add_argument("--config", required=True, help="config file (training/configs/*.toml)")
    t.add_argument("--data", required=True, nargs="+", help="folders of HR training images")
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    t.add_argument("--steps", type=int, help="total steps (overrides [train] steps)")
    t.add_argument("--stop-after", type=int, help="stop after this step (schedule unchanged)")
    t.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    t.add_argument("--threads", type=int, help="CPU threads per process (default: cores / local processes)")
    t.add_argument("--val-data", help="validation set folder with HR/ (default: [train] val_data)")
    t.add_argument("--cache", help="LR cache folder (default: RUN/cache)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] key, e.g. --set nf=16 --set batch_size=8")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("eval-network", help="PSNR/SSIM of a network on a benchmark folder")
    e.add_argument("--config", help="config file (optional with a run checkpoint)")
    e.add_argument("--weights", required=True, help="run checkpoint (.pt) or MuLUT network .npz")
    e.add_argument("--data", required=True, help="dataset folder with HR/ (and LR_bicubic/X4/)")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] key (e.g. nf) of the config")
    return p


def _eval_network(args) -> None:
    import torch

    from .config import ConfigError, load_config, parse_overrides
    from .networks import load_mulut_npz
    from .train import (TrainError, build_model, default_threads, load_checkpoint,
                        model_from_checkpoint, resolve_device)
    from rclut_numba.evaluation import evaluate
    from rclut_numba.spec import ModelSpec

    torch.set_num_threads(args.threads or default_threads())
    dev = resolve_device(args.device)
    weights = Path(args.weights)
    if not weights.is_file():
        raise TrainError(f"weights file {weights} does not exist")
    spec = None
    if args.config:
        spec, cfg = load_config(args.config, parse_overrides(args.set))
    if weights.suffix == ".npz":
        if spec is None:
            raise ConfigError("--config is required with .npz weights")
        model = build_model(spec, cfg)
        load_mulut_npz(model, weights)
    else:
        ck = load_checkpoint(weights)
        model = model_from_checkpoint(ck)
        if spec is not None and ModelSpec.from_json(ck["spec"]) != spec:
            raise TrainError(f"{weights} holds {model.spec.describe()}, but {args.config} "
                             f"describes {spec.describe()}")
    model.to(dev).eval()
    data = Path(args.data)
    if not (data / "HR").is_dir():
        raise TrainError(f"dataset folder {data} has no HR/ folder")
    with torch.no_grad():
        evaluate(model.upscale_uint8, data, model.spec.scale, out=lambda s: print(s, flush=True))


def _train_cmd(args) -> None:
    from .config import parse_overrides
    from .train import train

    train(args.config, args.data, args.out, resume=args.resume, steps=args.steps,
          device=args.device, overrides=parse_overrides(args.set), stop_after=args.stop_after,
          threads=args.threads, val_data=args.val_data, cache_dir=args.cache, quiet=args.quiet)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # Errors a user can fix get one line; anything else is a bug and keeps its traceback.
    from rclut_numba.evaluation import DatasetError
    from rclut_numba.imaging import ImageError
    from rclut_numba.spec import SpecError

    from .config import ConfigError
    from .data import DataError
    from .networks import WeightsError
    from .train import TrainError

    try:
        if args.command == "train":
            _train_cmd(args)
        else:
            _eval_network(args)
    except (ConfigError, SpecError, DataError, DatasetError, ImageError, WeightsError,
            TrainError, FileNotFoundError) as e:
        print(f"rclut-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rclut-train: interrupted (the last checkpoint is intact; use --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

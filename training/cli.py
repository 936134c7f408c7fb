"""``rclut-train``: train LUT super-resolution networks and evaluate them.

  rclut-train train --config C --data DIR [DIR...] [--data-shares S...] --out RUN [--resume]
                    [--steps N] [--device D] [--set KEY=VALUE ...]
  rclut-train eval-network --config C --weights W --data DIR
  rclut-train transfer RUN|CHECKPOINT|WEIGHTS.npz -o model.npz [--config C] [--force]
  rclut-train finetune model.npz --data DIR [DIR...] -o model_ft.npz [--steps N] [--resume]
  rclut-train pipeline CONFIG [--threads N] [--until STAGE] [--stop-after STEP]
                                  (see training/pipeline.py)
  rclut-train pack --data DIR [DIR...] -o pack.npz [--scale 4] [--patch 64] [--max-mb 48]

``--weights`` takes a run checkpoint (``RUN/last.pt``, ``RUN/best.pt``) or the published
MuLUT network (``network_2022.npz``).  Data-parallel training: ``torchrun --nproc_per_node N
-m training.cli train ...``.  Errors in the input (missing files, bad config) print one line to
stderr and exit with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def __getattr__(name):
    # write_transferred_bundle lives in training.transfer; pipelines started before it moved
    # import it from here at their transfer stage (lazily, so the CLI starts without torch)
    if name == "write_transferred_bundle":
        from .transfer import write_transferred_bundle

        return write_transferred_bundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--data and --data-shares, as train and finetune read them."""
    p.add_argument("--data", required=True, nargs="+",
                   help="folders of HR training images, or training packs (rclut-train pack)")
    p.add_argument("--data-shares", nargs="+", type=float, metavar="SHARE",
                   help="each --data entry's share of the samples, one number per entry "
                        "(default: by pixel count)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rclut-train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network (or --resume a run)")
    t.add_argument("--config", required=True, help="config file (training/configs/*.toml)")
    _add_data_arguments(t)
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    t.add_argument("--steps", type=int, help="total steps (overrides [train] steps)")
    t.add_argument("--stop-after", type=int, help="stop after this step (schedule unchanged)")
    t.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    t.add_argument("--threads", type=int,
                   help="CPU threads per process (default: cores / local processes)")
    t.add_argument("--val-data", help="validation set folder with HR/ (default: [train] val_data)")
    t.add_argument("--cache", help="LR cache folder (default: RUN/cache)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] key, e.g. --set nf=16 --set batch_size=8")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("eval-network", help="PSNR/SSIM of a network on a benchmark folder")
    e.add_argument("--config", help="config file (optional with a run checkpoint)")
    e.add_argument("--weights", required=True,
                   help="run checkpoint (.pt), run folder (its best.pt) or MuLUT network .npz")
    e.add_argument("--data", required=True, help="dataset folder with HR/ (and LR_bicubic/X4/)")
    e.add_argument("--ema", action="store_true",
                   help="score the checkpoint's weight EMA ([train] ema_decay) instead")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] key (e.g. nf) of the config")

    x = sub.add_parser("transfer", help="sample a trained network into a LUT bundle")
    x.add_argument("source", help="run folder (uses best.pt, else last.pt), a checkpoint, "
                   "or MuLUT .npz weights")
    x.add_argument("-o", "--output", required=True, help="bundle to write (.npz)")
    x.add_argument("--config", help="config file (required with .npz weights)")
    x.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="which checkpoint of a run folder (default: best validation PSNR)")
    x.add_argument("--ema", action="store_true",
                   help="sample the checkpoint's weight EMA ([train] ema_decay)")
    x.add_argument("--spread-rc", action="store_true",
                   help="stretch each RC window's reachable output span onto 0..255 before its "
                        "table (finer sampling of the 4D LUTs over RC outputs)")
    x.add_argument("--force", action="store_true", help="overwrite the output")

    f = sub.add_parser("finetune", help="fine-tune a bundle's tables through the LUT forward")
    f.add_argument("bundle", help="bundle to start from (.npz)")
    _add_data_arguments(f)
    f.add_argument("-o", "--output", required=True, help="fine-tuned bundle to write (.npz)")
    f.add_argument("--run", help="run folder for checkpoints and log (default: OUTPUT_finetune/)")
    f.add_argument("--steps", type=int, default=2000)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--crop", type=int, default=48)
    f.add_argument("--lr", type=float, default=3.0,
                   help="Adam step in table units (default 3; see training/finetune.py)")
    f.add_argument("--lr-min", type=float, default=0.15)
    f.add_argument("--val-every", type=int, default=500)
    f.add_argument("--val-data", help="dataset folder with HR/ (default ../shared/.../Set5)")
    f.add_argument("--freeze-rc", action="store_true", help="keep RC window tables fixed")
    f.add_argument("--flat-weight", type=float, default=0.0,
                   help="weight of the flat-field term (flat grey in, same grey out; default 0)")
    f.add_argument("--adam-eps", type=float, default=1e-8,
                   help="Adam's eps (default 1e-8); 1e-12 makes each step about --lr per entry")
    f.add_argument("--threads", type=int)
    f.add_argument("--stop-after", type=int, help="stop after this step (schedule unchanged)")
    f.add_argument("--resume", action="store_true")
    f.add_argument("--force", action="store_true", help="overwrite the output")
    q = sub.add_parser("pipeline", help="train, transfer, fine-tune, stamp, evaluate and publish "
                       "a model as its config's [pipeline] and [finetune] tables declare")
    q.add_argument("config", help="config file with [model], [train], [pipeline], [finetune]")
    q.add_argument("--threads", type=int, help="CPU threads (default: [pipeline] threads, else "
                                               "all cores)")
    q.add_argument("--until", help="stop after this stage: train, transfer, ft1.., stamp, eval")
    q.add_argument("--stop-after", type=int, metavar="STEP",
                   help="stop the network at this step (schedule unchanged), publishing its "
                        "resume point in results/<name>/")

    k = sub.add_parser("pack", help="training images as one file of LR/HR patches (a run that "
                       "travels: --data pack.npz, or [pipeline] data = [\"pack.npz\"])")
    k.add_argument("--data", required=True, nargs="+", help="folders of HR training images")
    k.add_argument("-o", "--output", required=True, help="pack to write (.npz)")
    k.add_argument("--scale", type=int, default=4, help="the models' scale (default 4)")
    k.add_argument("--patch", type=int, default=64,
                   help="LR patch side, at least the training crop (default 64)")
    k.add_argument("--max-mb", type=float, default=48.0,
                   help="largest file size in MB of 10^6 bytes (default 48)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--force", action="store_true", help="overwrite the output")
    return p


def _transfer(args) -> None:
    from .transfer import write_transferred_bundle

    write_transferred_bundle(args.source, args.output, config=args.config, which=args.checkpoint,
                             spread_rc=args.spread_rc, ema=args.ema, force=args.force)


def _pipeline(args) -> None:
    from .pipeline import run_pipeline

    status = run_pipeline(args.config, threads=args.threads, until=args.until,
                          stop_after=args.stop_after)
    print("pipeline: " + ", ".join(f"{k} {v}" for k, v in status.items()), flush=True)


def _pack(args) -> None:
    from .pack import write_pack

    write_pack(args.data, args.output, scale=args.scale, patch=args.patch,
               max_bytes=int(args.max_mb * 1e6), seed=args.seed, force=args.force)


def _finetune(args) -> None:
    from .finetune import finetune

    finetune(args.bundle, args.data, args.output, steps=args.steps, batch_size=args.batch_size,
             crop=args.crop, lr=args.lr, lr_min=args.lr_min, run_dir=args.run, resume=args.resume,
             force=args.force, val_every=args.val_every, val_data=args.val_data,
             train_rc=not args.freeze_rc, threads=args.threads, stop_after=args.stop_after,
             flat_weight=args.flat_weight, data_shares=args.data_shares, adam_eps=args.adam_eps)


def _eval_network(args) -> None:
    import torch

    from rclut_numba.evaluation import evaluate

    from .config import parse_overrides
    from .train import TrainError, default_threads, resolve_device
    from .transfer import load_network

    torch.set_num_threads(args.threads or default_threads())
    dev = resolve_device(args.device)
    data = Path(args.data)
    if not (data / "HR").is_dir():  # before loading anything
        raise TrainError(f"dataset folder {data} has no HR/ folder")
    # a checkpoint, a run folder (its best.pt) or MuLUT weights with --config; refused in one
    # line when missing
    model, _ = load_network(args.weights, args.config, ema=args.ema,
                            overrides=parse_overrides(args.set))
    model.to(dev).eval()
    with torch.no_grad():
        evaluate(model.upscale_uint8, data, model.spec.scale, out=lambda s: print(s, flush=True))


def _train_cmd(args) -> None:
    from .config import parse_overrides
    from .train import train

    train(args.config, args.data, args.out, resume=args.resume, steps=args.steps,
          device=args.device, overrides=parse_overrides(args.set), stop_after=args.stop_after,
          threads=args.threads, val_data=args.val_data, cache_dir=args.cache, quiet=args.quiet,
          data_shares=args.data_shares)


def _maybe_jemalloc(args) -> None:
    """Re-execute a bf16 training command under jemalloc (see training/allocator.py).

    Only the fused bf16 path (``"auto"`` resolved first, as the training will resolve it):
    measured stable under jemalloc (2.1 GB flat over 1300 steps of RC-LUT), while one float32
    run under it grew to 22 GB and was OOM-killed; float32, bf16-autocast and LUT fine-tuning
    keep glibc, as they always ran."""
    if args.command not in ("train", "pipeline"):
        return
    from .allocator import reexec_with_jemalloc
    from .config import ConfigError, load_config, parse_overrides

    try:
        _, cfg = load_config(args.config, parse_overrides(getattr(args, "set", [])))
    except (ConfigError, OSError):
        return  # the command itself reports the error
    precision = cfg.training_precision
    if precision == "auto":  # the training resolves it the same way (and prints it)
        from .precision import resolve_precision
        from .train import TrainError, resolve_device

        try:
            device = resolve_device(getattr(args, "device", None))
        except TrainError:
            return  # the command itself reports the error
        precision, _why = resolve_precision("auto", device)
    if precision == "bf16":
        reexec_with_jemalloc("training.cli", sys.argv[1:])


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if argv is None:
        _maybe_jemalloc(args)
    # Errors a user can fix get one line; anything else is a bug and keeps its traceback.
    from rclut_numba.bundle import BundleError
    from rclut_numba.cli import stop_on_closed_pipe
    from rclut_numba.evaluation import DatasetError
    from rclut_numba.imaging import ImageError
    from rclut_numba.spec import SpecError

    from .config import ConfigError
    from .data import DataError
    from .networks import WeightsError
    from .train import TrainError, TrainStopped

    try:
        {"train": _train_cmd, "eval-network": _eval_network, "transfer": _transfer,
         "finetune": _finetune, "pipeline": _pipeline, "pack": _pack}[args.command](args)
    except TrainStopped as e:
        print(f"rclut-train: {e}", file=sys.stderr)
        return 128 + e.signum
    except (ConfigError, SpecError, DataError, DatasetError, ImageError, WeightsError,
            TrainError, BundleError, FileNotFoundError, FileExistsError) as e:
        print(f"rclut-train: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return stop_on_closed_pipe()
    except KeyboardInterrupt:
        print("rclut-train: interrupted (the last checkpoint is intact; use --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

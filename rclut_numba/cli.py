"""``rclut``: upscale images, inspect and convert models, evaluate on a benchmark set."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from .bundle import BundleError, bundle_size_kb, save_bundle, stored_arrays
from .rc_storage import project_rc_tables
from .spec import SpecError

PROG = "rclut"


class CliError(Exception):
    """A one-line user-facing error."""


def _load(model_arg):
    from .engine import load_model
    return load_model(model_arg)


def _threads(n):
    """Checked before the model loads, so a bad --threads fails at once."""
    from .engine import check_threads
    return check_threads(n)


def cmd_upscale(args) -> int:
    from .imaging import ImageError, read_image, write_image
    inputs = [Path(p) for p in args.inputs]
    if args.output and len(inputs) != 1:
        raise CliError("-o/--output takes one input; use --out-dir for several")
    if args.out_dir and not Path(args.out_dir).is_dir():
        raise CliError(f"output folder {args.out_dir} does not exist")
    if args.output:
        targets = [Path(args.output)]
    else:
        targets = [Path(args.out_dir) / p.name for p in inputs]
        if len(set(targets)) != len(targets):
            raise CliError("two inputs share a file name; their outputs would collide in --out-dir")
    threads = _threads(args.threads)
    model = _load(args.model)
    failed = []
    for src, dst in zip(inputs, targets):
        try:
            if dst.exists() and not args.force:
                raise ImageError(f"{dst} exists; use --force to overwrite")
            if src.resolve() == dst.resolve():
                raise ImageError(f"{dst} is the input itself; choose another output")
            image = read_image(src)
            t0 = time.perf_counter()
            sr = model.upscale(image, threads=threads, luma_only=args.luma_only)
            ms = (time.perf_counter() - t0) * 1000
            write_image(dst, sr, force=args.force)
            print(f"{src} -> {dst}  {image.shape[1]}x{image.shape[0]} -> {sr.shape[1]}x{sr.shape[0]}"
                  f"  {ms:.1f} ms")
        except (ImageError, ValueError, OSError) as e:
            failed.append(src)
            print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {len(failed)} of {len(inputs)} inputs failed: "
              + ", ".join(str(p) for p in failed), file=sys.stderr)
        return 1
    return 0


def cmd_info(args) -> int:
    model = _load(args.model)
    spec = model.spec
    print(spec.describe())
    print(f"source: {model.source}")
    print(f"tables: {bundle_size_kb(spec, model.arrays):.1f} KB")
    print(f"receptive field: {2 * spec.margin + 1} x {2 * spec.margin + 1} LR pixels at most "
          f"(margin {spec.margin})")
    for name, a in stored_arrays(spec, model.arrays).items():  # as a bundle holds them
        print(f"  {name:22s} {str(a.dtype):6s} {'x'.join(map(str, a.shape))}")
    return 0


def cmd_convert(args) -> int:
    model = _load(args.source)
    out = Path(args.output)
    if out.suffix != ".npz":
        raise CliError(f"{out}: a bundle file name must end in .npz")
    arrays = project_rc_tables(model.arrays) if args.pack_rc else model.arrays
    save_bundle(out, model.spec, arrays, force=args.force)
    print(f"wrote {out}: {model.spec.describe()}, {bundle_size_kb(model.spec, arrays):.1f} KB")
    return 0


def cmd_eval(args) -> int:
    from .evaluation import evaluate
    threads = _threads(args.threads)
    model = _load(args.model)
    evaluate(lambda lr: model.upscale(lr, threads=threads, luma_only=args.luma_only),
             args.dataset, model.scale)
    return 0


def cmd_bench(args) -> int:
    model = _load(args.model)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise CliError(f"--size must look like 320x180, got {args.size!r}") from None
    if w < 1 or h < 1:
        raise CliError(f"--size must be positive, got {args.size!r}")
    rng = np.random.default_rng(0)
    # smooth content with some texture: closer to photos than white noise
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    image = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    threads = _threads(args.threads)
    model.upscale(image, threads=threads, luma_only=args.luma_only)  # compile / warm caches
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        model.upscale(image, threads=threads, luma_only=args.luma_only)
        times.append(time.perf_counter() - t0)
    print(f"{model.spec.name}: {w}x{h} RGB -> {w * model.scale}x{h * model.scale}"
          f"{' (luma only)' if args.luma_only else ''}: median {1000 * np.median(times):.1f} ms, "
          f"best {1000 * min(times):.1f} ms over {args.repeat} runs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="LUT image super-resolution (numba engine)")
    sub = p.add_subparsers(dest="command", required=True)
    model_help = "bundle .npz, MuLUT LUT folder or SR-LUT .npy (default: the embedded model)"

    u = sub.add_parser("upscale", help="upscale images")
    u.add_argument("inputs", nargs="+", metavar="INPUT")
    dest = u.add_mutually_exclusive_group(required=True)
    dest.add_argument("-o", "--output", help="output file (one input)")
    dest.add_argument("--out-dir", help="output folder (keeps the input file names)")
    u.add_argument("--model", help=model_help)
    u.add_argument("--threads", type=int, help="numba threads (default: all cores)")
    u.add_argument("--luma-only", action="store_true", help="LUTs on Y, bicubic on chroma (faster)")
    u.add_argument("--force", action="store_true", help="overwrite existing outputs")
    u.set_defaults(func=cmd_upscale)

    i = sub.add_parser("info", help="describe a model")
    i.add_argument("model", nargs="?", help=model_help)
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("convert", help="write a MuLUT folder / SR-LUT file / bundle as a bundle")
    c.add_argument("source")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--force", action="store_true")
    c.add_argument("--pack-rc", action="store_true",
                   help="round RC rows (all but the centre) to int8 codes x 2^k so the bundle "
                        "stores them packed: about half the RC storage, slightly lossy")
    c.set_defaults(func=cmd_convert)

    e = sub.add_parser("eval", help="PSNR/SSIM (Y, shave = scale) on a dataset folder with HR/")
    e.add_argument("dataset", metavar="DATASET_DIR")
    e.add_argument("--model", help=model_help)
    e.add_argument("--threads", type=int)
    e.add_argument("--luma-only", action="store_true")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="time one upscale")
    b.add_argument("--model", help=model_help)
    b.add_argument("--size", default="320x180", help="LR size WxH (default 320x180)")
    b.add_argument("--threads", type=int)
    b.add_argument("--repeat", type=int, default=10)
    b.add_argument("--luma-only", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def stop_on_closed_pipe() -> int:
    """Exit status for a reader that went away (`rclut info | head`): quiet, as Unix tools are.

    stdout is pointed at /dev/null so the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .evaluation import DatasetError
    from .imaging import ImageError
    try:
        return args.func(args)
    except BrokenPipeError:
        return stop_on_closed_pipe()
    except (CliError, BundleError, SpecError, ImageError, DatasetError, ValueError, OSError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

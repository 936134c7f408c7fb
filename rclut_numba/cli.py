"""``rclut``: upscale images, inspect and convert models, evaluate on a benchmark set.

Every failure is one line on stderr and a non-zero exit: 1 when some inputs of a batch failed
(the others are still written), 2 for a bad command line, model or dataset, 130 / 143 when
interrupted by SIGINT / SIGTERM (a file being written is removed), 141 when the reader of a
command's output (``rclut info | head``) went away. Outputs are checked (extension, folder,
existing file) before anything is computed, and written atomically.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import __version__
from .bundle import BundleError, bundle_size_kb, save_bundle, stored_arrays
from .imaging import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    WRITE_FORMATS,
    ImageError,
    check_output,
    check_pixels,
)
from .rc_storage import project_rc_tables
from .spec import SpecError

PROG = "rclut"
# What a folder given as input is taken to hold; GIF is read but not written (its outputs
# under an output folder become .png).
READ_EXTENSIONS = tuple(dict.fromkeys((*IMAGE_EXTENSIONS, ".gif")))


class CliError(Exception):
    """A one-line user-facing error."""


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that temporary files are removed on the way
    out exactly as for Ctrl-C (a ``BaseException``: ``except Exception`` does not swallow it)."""


def _load(model_arg, scale=None, arithmetic=None):
    from .engine import load_model
    return load_model(model_arg, scale=scale, arithmetic=arithmetic)


def _threads(n):
    """Checked before the model loads, so a bad --threads fails at once."""
    from .engine import check_threads
    return check_threads(n)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _point_stdout_at_devnull() -> None:
    """After the reader of stdout went away: later writes and the final flush go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# ---- what the user sees: result lines, notes, a progress bar -------------------------------
class Console:
    """Result lines on stdout, notes on stderr, and a progress bar on stderr that is drawn
    only when stderr is a terminal and there is more than one item.

    With ``tolerate_closed_stdout`` (upscale, convert: the product is the files) a closed
    stdout (``| head -0``) silences the result lines and changes nothing else; otherwise (info,
    eval: the product is the text) the ``BrokenPipeError`` propagates."""

    def __init__(self, total: int = 0, tolerate_closed_stdout: bool = True):
        self.total = total
        self.done = 0
        self.label = ""
        self.tolerate = tolerate_closed_stdout
        self.stdout_gone = False
        self._open_note = False
        isatty = getattr(sys.stderr, "isatty", None)
        self.tty = bool(isatty and isatty())

    @property
    def bar(self) -> bool:
        return self.tty and self.total > 1

    def _err(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr: nothing left to tell

    def _clear(self) -> None:
        if self.bar:
            self._err("\r\033[K")

    def _draw(self) -> None:
        if self.bar and not self._open_note:
            width = 24
            filled = round(width * self.done / self.total)
            label = self.label if len(self.label) <= 40 else "..." + self.label[-37:]
            self._err(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                      f"{label}\033[K")

    def out(self, line: str) -> None:
        self._clear()
        if not self.stdout_gone:
            try:
                print(line, flush=True)
            except BrokenPipeError:
                if not self.tolerate:
                    raise
                self.stdout_gone = True
                _point_stdout_at_devnull()
        self._draw()

    def note(self, line: str, end: str = "\n") -> None:
        """A line on stderr; ``end=""`` leaves it open for :meth:`finish_note`."""
        self._clear()
        self._err(line + end)
        self._open_note = end == ""
        self._draw()

    def finish_note(self, text: str) -> None:
        self._err(text + "\n")
        self._open_note = False
        self._draw()

    def error(self, message: str) -> None:
        self.note(f"{PROG}: error: {message}")

    def step(self, done: int, label: str = "", total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done, self.label = done, label
        self._draw()

    def close(self) -> None:
        self._clear()
        self.total = 0


# ---- first-run compilation -------------------------------------------------------------------
class Warmup:
    """Runs the kernels an image needs once on a tiny image of the same layout before the first
    such image is timed, so per-image times exclude compilation and cache loading. When numba
    has to compile (the first run after installing), stderr says so once, with how long it
    took; runs after that load the compiled kernels from numba's cache."""

    MESSAGE = "compiling the numba kernels (first run only; later runs load them from the cache)"

    def __init__(self, model, luma_only: bool, console: Console):
        self.model, self.luma_only, self.console = model, luma_only, console
        self.done: set[tuple[int, ...]] = set()

    def __call__(self, image: np.ndarray) -> None:
        key = image.shape[2:]
        if key == (3,) and not self.luma_only:
            key = ()  # RGB runs the gray kernels plane by plane: one gray plane warms them
        if key in self.done:
            return
        self.done.add(key)
        from .warmup import compilations
        tiny = np.zeros((8, 8) + key, np.uint8)
        before = compilations()
        finished = threading.Event()
        announced = threading.Event()

        def watch():
            while not finished.wait(0.1):
                if compilations() > before:
                    self.console.note(f"{PROG}: {self.MESSAGE}...", end="")
                    announced.set()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        t0 = time.perf_counter()
        watcher.start()
        try:
            # one thread: waking a pool for 64 pixels costs more than it saves on a busy machine
            self.model.upscale(tiny, threads=1, luma_only=self.luma_only)
        finally:
            finished.set()
            watcher.join()
        seconds = time.perf_counter() - t0
        if announced.is_set():
            self.console.finish_note(f" done in {seconds:.1f} s")
        elif compilations() > before:
            self.console.note(f"{PROG}: {self.MESSAGE}: took {seconds:.1f} s")


# ---- upscale ---------------------------------------------------------------------------------
def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    """The images of a folder, sorted; hidden files (and a writer's temporary files) skipped;
    subfolders only when ``recursive`` (symlinked folders are not followed)."""
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in sorted(files)]
    else:
        found = sorted(folder.iterdir())
    return [p for p in found if not p.name.startswith(".")
            and p.suffix.lower() in READ_EXTENSIONS and p.is_file()]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing or unreadable (a symlink loop): not the same file
        return False


def _output_name(rel: Path) -> Path:
    """Under an output folder an input keeps its name, unless its format cannot be written
    (``.gif``): then it becomes ``.png``."""
    return rel if rel.suffix.lower() in WRITE_FORMATS else rel.with_suffix(".png")


def _plan_upscale(args, console: Console) -> tuple[list[tuple[Path, Path]], list[Path], int]:
    """``(items, failed, n_inputs)``: every (input, output) pair to compute, the inputs already
    refused (missing folder images, output problems), and how many inputs there were."""
    inputs = [Path(p) for p in [*args.input, *args.inputs]]
    if not inputs:
        raise CliError("no input: give image files or folders (INPUT ... or -i PATH)")
    out_dir = Path(args.out_dir) if args.out_dir else None
    output = Path(args.output) if args.output else None
    folder_inputs = [p for p in inputs if p.is_dir()]
    if output is not None and (output.is_dir() or len(inputs) > 1 or folder_inputs):
        if not output.is_dir():
            what = "a folder input" if folder_inputs else "several inputs"
            raise CliError(f"-o {output}: {what} need an existing output folder; -o names a "
                           "file for one input (or use --out-dir)")
        out_dir, output = output, None
    if out_dir is not None and not out_dir.is_dir():
        raise CliError(f"output folder {out_dir} does not exist")

    failed: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    n_inputs = 0
    for src in inputs:
        if src.is_dir():
            images = _folder_images(src, args.recursive)
            if not images:
                n_inputs += 1
                failed.append(src)
                console.error(f"{src}: a folder without images ({', '.join(READ_EXTENSIONS)})"
                              + ("" if args.recursive else "; --recursive reads its subfolders"))
            for img in images:
                n_inputs += 1
                pairs.append((img, out_dir / _output_name(img.relative_to(src))))
        else:
            n_inputs += 1
            dst = output if output is not None else out_dir / _output_name(Path(src.name))
            pairs.append((src, dst))
    targets = [dst for _, dst in pairs]
    if len(set(targets)) != len(targets):
        dup = next(t for t in targets if targets.count(t) > 1)
        raise CliError(f"two inputs would both be written to {dup}; give them separate output "
                       "folders")
    items = []
    for src, dst in pairs:
        try:
            if _same_file(src, dst):
                raise ImageError(f"{dst} is the input itself; choose another output")
            if dst.parent.is_dir() or out_dir is None:
                check_output(dst, force=args.force)
            else:  # a subfolder of the output folder that --recursive creates when writing
                check_output(out_dir / dst.name, force=True)
        except ImageError as e:
            failed.append(src)
            console.error(_one_line(e))
            continue
        items.append((src, dst))
    return items, failed, n_inputs


class FileFailed(Exception):
    """One input of a batch failed; the message is its one-line error."""


def upscale_file(model, src: Path, dst: Path, *, force: bool, luma_only: bool,
                 max_pixels: int | None, threads: int | None, warmup=None) -> str:
    """Read ``src``, upscale it and write ``dst`` atomically; returns the result line.

    Used by the local loop and by each Dask task (``rclut_numba.dask_batch``); ``warmup``
    (a :class:`Warmup`) runs before the timed upscale.  Raises :class:`FileFailed`."""
    from .imaging import read_image, write_image
    image = None
    try:
        image = read_image(src, max_pixels=max_pixels)
        dst.parent.mkdir(parents=True, exist_ok=True)  # --recursive's subfolders
        check_output(dst, force=force, channels=1 if image.ndim == 2 else image.shape[2])
        if warmup is not None:
            warmup(image)
        t0 = time.perf_counter()
        sr = model.upscale(image, threads=threads, luma_only=luma_only)
        ms = (time.perf_counter() - t0) * 1000
        write_image(dst, sr, force=force)
        return (f"{src} -> {dst}  {image.shape[1]}x{image.shape[0]} -> "
                f"{sr.shape[1]}x{sr.shape[0]}  {ms:.1f} ms")
    except (ImageError, ValueError, OSError) as e:
        raise FileFailed(_one_line(e)) from None
    except MemoryError:
        size = f" ({image.shape[1]}x{image.shape[0]})" if image is not None else ""
        raise FileFailed(f"{src}: out of memory upscaling it{size}; try a smaller "
                         "--max-pixels or a machine with more memory") from None


def _upscale_on_dask(args, items: list[tuple[Path, Path]], failed: list[Path],
                     console: Console) -> None:
    """``--dask ADDRESS``: the items as tasks on a Dask cluster, reported as they finish."""
    try:
        from distributed import Client

        from .dask_batch import upscale_items
    except ImportError:
        raise CliError("--dask needs the dask extra: pip install 'rclut_numba[dask]'") from None
    model = _load(args.model, args.scale, args.arithmetic)
    console.step(0, "", total=len(items))
    with Client(args.dask) as client:
        results = upscale_items(client, model, items, force=args.force,
                                luma_only=args.luma_only, max_pixels=args.max_pixels,
                                threads=args.threads)
        for done, (src, line, error) in enumerate(results, 1):
            if error is None:
                console.out(line)
            else:
                failed.append(src)
                console.error(error)
            console.step(done, src.name)
    console.close()


def cmd_upscale(args) -> int:
    threads = _threads(args.threads)
    console = Console()
    items, failed, n_inputs = _plan_upscale(args, console)
    if items and args.dask:
        _upscale_on_dask(args, items, failed, console)
    elif items:
        model = _load(args.model, args.scale, args.arithmetic)
        warmup = Warmup(model, args.luma_only, console)
        console.step(0, "", total=len(items))
        for i, (src, dst) in enumerate(items):
            console.step(i, src.name)
            try:
                console.out(upscale_file(model, src, dst, force=args.force,
                                         luma_only=args.luma_only, max_pixels=args.max_pixels,
                                         threads=threads, warmup=warmup))
            except FileFailed as e:
                failed.append(src)
                console.error(str(e))
        console.close()
    if failed:
        console.note(f"{PROG}: {len(failed)} of {n_inputs} inputs failed: "
                     + ", ".join(str(p) for p in failed))
        return 1
    return 0


# ---- the other commands ----------------------------------------------------------------------
def cmd_info(args) -> int:
    from .analysis import flat_field_deviation, format_flat_field
    model = _load(args.model, args.scale, args.arithmetic)
    Warmup(model, False, Console())(np.zeros((1, 1), np.uint8))  # says so if it compiles
    spec = model.spec
    print(spec.describe())
    print(f"source: {model.source}")
    print(f"arithmetic: {model.arithmetic}")
    print(f"tables: {bundle_size_kb(spec, model.arrays):.1f} KB")
    print(f"receptive field: {2 * spec.margin + 1} x {2 * spec.margin + 1} LR pixels at most "
          f"(margin {spec.margin})")
    print(f"flat field: {format_flat_field(flat_field_deviation(model))}")
    for name, a in stored_arrays(spec, model.arrays).items():  # as a bundle holds them
        print(f"  {name:22s} {str(a.dtype):6s} {'x'.join(map(str, a.shape))}")
    return 0


def cmd_convert(args) -> int:
    out = Path(args.output)
    if out.suffix != ".npz":
        raise CliError(f"{out}: a bundle file name must end in .npz")
    if not out.parent.is_dir():
        raise CliError(f"output folder {out.parent} does not exist")
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; use --force to overwrite")
    model = _load(args.source)
    arrays = project_rc_tables(model.arrays) if args.pack_rc else model.arrays
    save_bundle(out, model.spec, arrays, force=args.force)
    Console().out(f"wrote {out}: {model.spec.describe()}, "
                  f"{bundle_size_kb(model.spec, arrays):.1f} KB")
    return 0


def cmd_eval(args) -> int:
    from .evaluation import evaluate
    threads = _threads(args.threads)
    model = _load(args.model, args.scale, args.arithmetic)
    console = Console(tolerate_closed_stdout=False)
    warmup = Warmup(model, args.luma_only, console)

    def upscale(lr):
        warmup(lr)
        return model.upscale(lr, threads=threads, luma_only=args.luma_only)

    try:
        evaluate(upscale, args.dataset, model.scale, out=console.out,
                 progress=lambda done, total, name: console.step(done, name, total),
                 max_pixels=args.max_pixels)
    finally:
        console.close()
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CliError(f"--size must look like 320x180, got {text!r}") from None
    if w < 1 or h < 1:
        raise CliError(f"--size must be positive, got {text!r}")
    return w, h


def cmd_bench(args) -> int:
    from .planning import FRAMES, MEMORY_FRAME, cpu_name, frame_ms, input_size, peak_memory_mb
    from .planning import synthetic_image as test_image
    if args.repeat < 1:
        raise CliError(f"--repeat must be at least 1, got {args.repeat}")
    size = _parse_size(args.size) if args.size is not None else None
    if size is not None:
        check_pixels(*size, args.max_pixels, f"--size {args.size}")
    threads = _threads(args.threads)
    model = _load(args.model, args.scale, args.arithmetic)
    Warmup(model, args.luma_only, Console())(test_image(8, 8))
    luma = " (luma only)" if args.luma_only else ""
    if size is not None:  # one size, one thread count
        w, h = size
        timed = frame_ms(model, test_image(w, h), [threads], args.repeat, args.luma_only)
        ms, best = timed[threads]
        print(f"{model.spec.name}: {w}x{h} RGB -> {w * model.scale}x{h * model.scale}{luma}: "
              f"median {ms:.1f} ms, best {best:.1f} ms over {args.repeat} runs")
        return 0
    import numba
    counts = [threads] if threads else sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})
    print(f"{model.spec.name} x{model.scale} ({model.source}), RGB{luma}; medians of "
          f"{args.repeat} runs, thread counts interleaved; {cpu_name()}")
    print()
    print("| output frame | input | " + " | ".join(
        f"{t} thread{'s' if t > 1 else ''} ms" for t in counts) + " |")
    print("|---" * (2 + len(counts)) + "|")
    for name, out_w, out_h in FRAMES:
        w, h = input_size(out_w, out_h, model.scale)
        check_pixels(w, h, args.max_pixels, f"the {name} frame's input")
        ms = frame_ms(model, test_image(w, h), counts, args.repeat, args.luma_only)
        print(f"| {name} ({w * model.scale}x{h * model.scale}) | {w}x{h} | "
              + " | ".join(f"{ms[t][0]:.1f}" for t in counts) + " |")
    if not args.no_memory:
        name, out_w, out_h = MEMORY_FRAME
        w, h = input_size(out_w, out_h, model.scale)
        check_pixels(w, h, args.max_pixels, f"the {name} frame's input")
        model_args = [f"--{k}={v}" for k, v in (("model", args.model), ("scale", args.scale),
                                               ("arithmetic", args.arithmetic)) if v is not None]
        peak, added = peak_memory_mb(model_args, w, h, args.luma_only)
        print()
        print(f"peak memory, {name} output ({w}x{h} -> {w * model.scale}x{h * model.scale}): "
              f"{peak:.0f} MB resident, whole process ({added:.0f} MB of it added by the "
              "upscale)")
    return 0


def cmd_warmup(args) -> int:
    from .engine import embedded_scales, load_model
    from .warmup import cache_dir, warm_up
    models = ([_load(m) for m in args.model] if args.model
              else [load_model(scale=s) for s in embedded_scales()])
    if not models:
        raise CliError("no embedded model in this build; name models with --model")
    for model in models:
        t0 = time.perf_counter()
        compiled = warm_up(model)
        seconds = time.perf_counter() - t0
        what = f"{compiled} functions compiled" if compiled else "all from the cache"
        print(f"{model.spec.name} x{model.scale} ({model.source}): {what}, {seconds:.1f} s")
    print(f"numba cache: {cache_dir()}")
    return 0


# ---- the command line ------------------------------------------------------------------------
def _max_pixels(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels or 'none', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _scale(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer scale, got {text!r}") from None
    if not 1 <= n <= 8:
        raise argparse.ArgumentTypeError(f"must be 1..8, got {n}")
    return n


def _add_model_choice(parser: argparse.ArgumentParser) -> None:
    """--scale and --arithmetic: which embedded model, and how a model's tables are run."""
    parser.add_argument("--scale", type=_scale, metavar="S",
                        help="upscaling factor: picks the embedded model rclut_x{S}.npz "
                             "(2, 3 or 4; default 4); with --model it must be the model's own")
    parser.add_argument("--arithmetic", choices=("integer", "srlut"),
                        help="integer: the project's exact arithmetic (edge padding, one "
                             "rounding); srlut: as SR-LUT's own code (reflect padding, float "
                             "rounding; SR-LUT's single-LUT layout only). Default: srlut for "
                             "SR-LUT's published .npy LUTs, integer otherwise")


def _version() -> str:
    import numba
    return f"{PROG} {__version__} (numba {numba.__version__}, numpy {np.__version__})"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="LUT image super-resolution (numba engine)")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True)
    model_help = "bundle .npz, MuLUT LUT folder or SR-LUT .npy (default: the embedded model)"
    pixels_help = (f"refuse images of more pixels than this, from their header (default "
                   f"{DEFAULT_MAX_PIXELS}, 4.2 Mpixel; 'none' for no limit)")

    u = sub.add_parser("upscale", help="upscale images",
                       description="Upscale image files, or every image in a folder.")
    u.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    u.add_argument("-i", "--input", action="append", default=[], metavar="PATH",
                   help="an image file or folder (repeatable; the same as INPUT)")
    dest = u.add_mutually_exclusive_group(required=True)
    dest.add_argument("-o", "--output", metavar="PATH",
                      help="output file for one input, or an existing output folder")
    dest.add_argument("--out-dir", metavar="DIR",
                      help="output folder (keeps the input file names; .gif becomes .png)")
    u.add_argument("-r", "--recursive", action="store_true",
                   help="with a folder input, read its subfolders too (their layout is kept)")
    u.add_argument("--model", help=model_help)
    _add_model_choice(u)
    u.add_argument("--threads", type=int,
                   help="numba threads per image (default: all cores; with --dask, 1)")
    u.add_argument("--luma-only", action="store_true", help="LUTs on Y, bicubic on chroma (faster)")
    u.add_argument("--force", action="store_true", help="overwrite existing outputs")
    u.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=pixels_help)
    u.add_argument("--dask", metavar="ADDRESS",
                   help="run the images as tasks on this Dask scheduler (tcp://host:8786; the "
                        "dask extra); inputs and outputs must be paths every worker sees")
    u.set_defaults(func=cmd_upscale)

    i = sub.add_parser("info", help="describe a model")
    i.add_argument("model", nargs="?", help=model_help)
    _add_model_choice(i)
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
    _add_model_choice(e)
    e.add_argument("--threads", type=int)
    e.add_argument("--luma-only", action="store_true")
    e.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=pixels_help)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="ms per 720p / 1080p frame, peak memory at 4K",
                       description="Figures to plan with: ms per 720p and 1080p output frame at "
                                   "1 and 2 threads, and the peak memory of a process writing "
                                   "a 4K frame; with --size, one input size only.")
    b.add_argument("--model", help=model_help)
    _add_model_choice(b)
    b.add_argument("--size", help="time this input size WxH only (e.g. 320x180)")
    b.add_argument("--threads", type=int, help="only this thread count (default: 1 and 2)")
    b.add_argument("--repeat", type=int, default=10)
    b.add_argument("--no-memory", action="store_true",
                   help="skip the 4K peak-memory measurement (a separate process)")
    b.add_argument("--luma-only", action="store_true")
    b.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=pixels_help)
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("warmup", help="compile every kernel now (device images, containers)",
                       description="Compile (or load from numba's cache) every kernel the models "
                                   "can run, on tiny images, so that the first real upscale "
                                   "starts at once. Run it where rclut is installed, as the "
                                   "user that will run it (numba's cache must be writable).")
    w.add_argument("--model", action="append", metavar="MODEL",
                   help=model_help.replace("(default: the embedded model)",
                                           "(repeatable; default: every embedded model)"))
    w.set_defaults(func=cmd_warmup)
    return p


def stop_on_closed_pipe() -> int:
    """Exit status for a reader that went away (`rclut info | head`): quiet, as Unix tools are.

    stdout is pointed at /dev/null so the interpreter's final flush cannot raise again."""
    _point_stdout_at_devnull()
    return 141  # 128 + SIGPIPE


def _skip_numba_blas_probe() -> None:
    """Spare the ``scipy.linalg`` import (~115 ms of a 0.6 s run) that numba makes, where scipy
    is installed, when it first compiles or loads a kernel: only to learn whether ``np.dot``
    could call BLAS. rclut's kernels use no BLAS; numba then picks its own inner product for
    ``np.correlate``/``np.convolve``, and anything that does need BLAS imports scipy when it is
    compiled, as before. Nothing changes if numba is laid out differently."""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # makes "import scipy.linalg..." fail, for this import
    try:
        import numba.np.arraymath  # noqa: F401
    except ImportError:  # another numba layout: nothing to spare
        pass
    finally:
        del sys.modules["scipy.linalg"]


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("upscale", "eval", "bench"):
        _skip_numba_blas_probe()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except BrokenPipeError:
        return stop_on_closed_pipe()
    # ValueError covers evaluation.DatasetError (not imported here: most commands never need it)
    except (CliError, BundleError, SpecError, ImageError, ValueError, OSError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

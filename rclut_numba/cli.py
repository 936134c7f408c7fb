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


def _load(model_arg):
    from .engine import load_model
    return load_model(model_arg)


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
def _cache_misses() -> int:
    """numba compilations so far in this process (cache misses of rclut_numba's kernels).

    A miss is counted before numba compiles, so a rise means "compiling now"."""
    from numba.core.dispatcher import Dispatcher
    seen, total = set(), 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("rclut_numba") or module is None:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and id(obj) not in seen:
                seen.add(id(obj))
                try:
                    total += sum(obj.stats.cache_misses.values())
                except RuntimeError:  # the counter grew while read: a compile has started
                    total += 1
    return total


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
        tiny = np.zeros((8, 8) + key, np.uint8)
        before = _cache_misses()
        finished = threading.Event()
        announced = threading.Event()

        def watch():
            while not finished.wait(0.1):
                if _cache_misses() > before:
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
        elif _cache_misses() > before:
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


def cmd_upscale(args) -> int:
    from .imaging import read_image, write_image
    threads = _threads(args.threads)
    console = Console()
    items, failed, n_inputs = _plan_upscale(args, console)
    if items:
        model = _load(args.model)
        warmup = Warmup(model, args.luma_only, console)
        console.step(0, "", total=len(items))
        for i, (src, dst) in enumerate(items):
            console.step(i, src.name)
            image = None
            try:
                image = read_image(src, max_pixels=args.max_pixels)
                dst.parent.mkdir(parents=True, exist_ok=True)  # --recursive's subfolders
                check_output(dst, force=args.force,
                             channels=1 if image.ndim == 2 else image.shape[2])
                warmup(image)
                t0 = time.perf_counter()
                sr = model.upscale(image, threads=threads, luma_only=args.luma_only)
                ms = (time.perf_counter() - t0) * 1000
                write_image(dst, sr, force=args.force)
                console.out(f"{src} -> {dst}  {image.shape[1]}x{image.shape[0]} -> "
                            f"{sr.shape[1]}x{sr.shape[0]}  {ms:.1f} ms")
                del sr
            except (ImageError, ValueError, OSError) as e:
                failed.append(src)
                console.error(_one_line(e))
            except MemoryError:
                failed.append(src)
                size = f" ({image.shape[1]}x{image.shape[0]})" if image is not None else ""
                console.error(f"{src}: out of memory upscaling it{size}; try a smaller "
                              "--max-pixels or a machine with more memory")
        console.close()
    if failed:
        console.note(f"{PROG}: {len(failed)} of {n_inputs} inputs failed: "
                     + ", ".join(str(p) for p in failed))
        return 1
    return 0


# ---- the other commands ----------------------------------------------------------------------
def cmd_info(args) -> int:
    from .analysis import flat_field_deviation, format_flat_field
    model = _load(args.model)
    Warmup(model, False, Console())(np.zeros((1, 1), np.uint8))  # says so if it compiles
    spec = model.spec
    print(spec.describe())
    print(f"source: {model.source}")
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
    model = _load(args.model)
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
    w, h = _parse_size(args.size)
    if args.repeat < 1:
        raise CliError(f"--repeat must be at least 1, got {args.repeat}")
    check_pixels(w, h, args.max_pixels, f"--size {args.size}")
    threads = _threads(args.threads)
    model = _load(args.model)
    rng = np.random.default_rng(0)
    # smooth content with some texture: closer to photos than white noise
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    image = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    del yy, xx, base
    Warmup(model, args.luma_only, Console())(image)
    model.upscale(image, threads=threads, luma_only=args.luma_only)  # warm caches
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        model.upscale(image, threads=threads, luma_only=args.luma_only)
        times.append(time.perf_counter() - t0)
    print(f"{model.spec.name}: {w}x{h} RGB -> {w * model.scale}x{h * model.scale}"
          f"{' (luma only)' if args.luma_only else ''}: median {1000 * np.median(times):.1f} ms, "
          f"best {1000 * min(times):.1f} ms over {args.repeat} runs")
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
    u.add_argument("--threads", type=int, help="numba threads (default: all cores)")
    u.add_argument("--luma-only", action="store_true", help="LUTs on Y, bicubic on chroma (faster)")
    u.add_argument("--force", action="store_true", help="overwrite existing outputs")
    u.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=pixels_help)
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
    e.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=pixels_help)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="time one upscale")
    b.add_argument("--model", help=model_help)
    b.add_argument("--size", default="320x180", help="LR size WxH (default 320x180)")
    b.add_argument("--threads", type=int)
    b.add_argument("--repeat", type=int, default=10)
    b.add_argument("--luma-only", action="store_true")
    b.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=pixels_help)
    b.set_defaults(func=cmd_bench)
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

"""The training loop: Adam, cosine LR, MSE, validation, exact resume, data parallelism.

Run folder ``RUN/``:
  ``last.pt``     latest checkpoint (model, optimizer, scheduler, step, RNG states, spec, config)
  ``best.pt``     checkpoint with the best validation PSNR so far
  ``log.jsonl``   one JSON object per line: ``{"step", "loss", "lr", "s_per_step",
                  "data_share", "eta_h", "rss_gb", "precision", "threads"}`` every
                  ``log_every`` steps (``data_share``: the part of a step spent assembling its
                  batch; ``rss_gb``: resident memory; ``precision``: the MLP precision those
                  steps ran in; ``threads``: torch threads of all processes together),
                  ``{"step", "val_psnr", "val_ssim"}`` at validations (plus
                  ``"val": {set: {"psnr", "ssim"}}`` with several sets, and
                  ``"ema": {set: {"psnr", "ssim"}}`` with a weight EMA, training/ema.py)
  ``config.toml`` / ``spec.json``  what the run was started with
  ``cache/``      LR images made from the HR training images (reused on resume)
Checkpoints are written to a temporary file and moved into place (``os.replace``): a run killed
at any moment leaves the previous checkpoint intact.  ``--resume`` continues from ``last.pt``
and reproduces the losses of an uninterrupted run exactly (same step, optimizer moments, LR,
and -- the data being a pure function of the step -- the same batches).

Data parallel: launch with ``torchrun --nproc_per_node N -m training.cli train ...``; each
process takes ``batch_size / N`` samples of the same global batch, gradients are averaged by
DistributedDataParallel (gloo on CPU, nccl on GPU), and rank 0 logs, validates and saves.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from rclut_numba.fileio import atomic_write
from rclut_numba.spec import ModelSpec, array_key

from .config import ConfigError, TrainConfig, load_config
from .data import SRDataset
from .ema import WeightEMA
from .networks import Block, LUTNet
from .precision import resolve_precision

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_VERSION = 1


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why."""


class TrainStopped(TrainError):
    """SIGTERM / SIGINT arrived: the step in progress finished and was checkpointed."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step}; the checkpoint holds it, "
                         f"continue with --resume")


class StopSignals:
    """While active, SIGTERM and SIGINT only set :attr:`signum`; the loop checks it after
    each step, checkpoints that step and raises :class:`TrainStopped`.  A second signal
    interrupts at once (the previous checkpoint stays intact).  Outside the main thread
    (nothing to install there) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handler(self, signum, _frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# -- small helpers ---------------------------------------------------------------------------
def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def default_threads(local_world: int = 1) -> int:
    """CPU threads per process: the cores this process may use, shared among local ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world))


@contextmanager
def torch_threads_kept():
    """Keep torch's CPU thread count across a call into the numba engine.

    numba's OpenMP threading layer and torch share one OpenMP runtime, and a parallel numba
    kernel leaves the calling thread's OpenMP thread count at numba's own; torch then runs its
    later OpenMP ops (``F.unfold``, ...) on that many threads.  Measured: two one-thread LUT
    fine-tuning legs side by side on 2 cores ran at 8-12 s/step after the engine scored their
    tables, and at 0.7-0.85 s/step with the count kept."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def atomic_torch_save(obj, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def cosine_factor(step: int, total: int, lr: float, lr_min: float) -> float:
    """LR multiplier at ``step``: ``lr -> lr_min`` along half a cosine over ``total`` steps."""
    t = min(step, total) / max(1, total)
    return (lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))) / lr


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """LR multiplier at ``step`` of a ``total``-step cosine schedule, with the config's cooldown:
    from ``cooldown_start`` a linear fall to 0 over ``cooldown_steps`` (its last step still
    moves, at 1/cooldown_steps of the value where the cooldown began)."""
    if cfg.cooldown_steps and step >= cfg.cooldown_start:
        left = max(0.0, 1.0 - (step - cfg.cooldown_start) / cfg.cooldown_steps)
        return cosine_factor(cfg.cooldown_start, total, cfg.lr, cfg.lr_min) * left
    return cosine_factor(step, total, cfg.lr, cfg.lr_min)


def build_model(spec: ModelSpec, cfg: TrainConfig) -> LUTNet:
    return LUTNet(spec, nf=cfg.nf, rc_channels=cfg.rc_channels or cfg.nf)


def load_checkpoint(path) -> dict:
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise TrainError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # torch raises many types for a bad file
        raise TrainError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ck, dict) or ck.get("format") != "rclut-train-checkpoint":
        raise TrainError(f"{path} is not a training checkpoint of this project")
    return ck


def checkpoint_state(ck: dict, ema: bool = False) -> dict:
    """The checkpoint's network state: its weights, or with ``ema`` their moving average
    (which covers the parameters; buffers come from the weights)."""
    if not ema:
        return ck["model"]
    if not ck.get("ema"):
        raise TrainError("the checkpoint holds no EMA weights (its run had no "
                         "[train] ema_decay)")
    return {**ck["model"], **ck["ema"]}


def model_from_checkpoint(ck: dict, ema: bool = False) -> LUTNet:
    """The checkpoint's network: its weights, or with ``ema`` their moving average."""
    model = build_model(ModelSpec.from_json(ck["spec"]), TrainConfig(**ck["train_config"]))
    model.load_state_dict(checkpoint_state(ck, ema))
    return model


def subpixel_resampling(src_scale: int, dst_scale: int) -> torch.Tensor:
    """``(dst**2, src**2)`` bilinear weights from one scale's output subpixels to another's.

    Subpixel ``k = s*dy + dx`` of scale ``s`` sits at ``((dy + 0.5) / s, (dx + 0.5) / s)`` inside
    its LR pixel; each target subpixel mixes the (up to 4) source subpixels around its position,
    clamped at the pixel's edge.  From x4 to x2 this is the 2x2 average."""
    def axis(src, dst):
        w = torch.zeros(dst, src, dtype=torch.float64)
        for t in range(dst):
            pos = min(max((t + 0.5) * src / dst - 0.5, 0.0), src - 1.0)
            lo = int(pos)  # pos >= 0: truncation is the floor
            hi = min(lo + 1, src - 1)
            w[t, lo] += 1.0 - (pos - lo)
            w[t, hi] += pos - lo
        return w
    a = axis(src_scale, dst_scale)
    return torch.kron(a, a).float()  # separable: rows (ty, tx), columns (sy, sx)


def warm_start(model: LUTNet, cfg: TrainConfig, path) -> str:
    """Start ``model`` from another run's network (``[train] init_from``), e.g. x2 from x4.

    The layouts must match stage by stage and branch by branch (patterns and RC windows), and
    so must ``nf`` and ``rc_channels``; the scale may differ.  Everything but the last stage's
    output layers is copied; those are resampled from the source's output subpixels to the
    model's (:func:`subpixel_resampling`).  With ``[train] init_new_stage = k`` the model has
    one stage more than the source, stage ``k``: the others are copied in order and stage ``k``
    is set to pass its input through (:func:`pass_through_init`), so that the deeper network
    starts where the source ends.  With ``[train] init_new_branches`` the stages may hold
    branches the source lacks (:func:`_branch_sources`), e.g. stage-1 D and Y branches beside
    the source's S ones.  With ``[train] init_weights = "ema"`` the source's weight EMA is
    copied instead of its weights.  Returns a one-line description for the log."""
    ck = load_checkpoint(path)
    src_spec = ModelSpec.from_json(ck["spec"])
    spec = model.spec
    try:
        weights = checkpoint_state(ck, ema=cfg.init_weights == "ema")
    except TrainError as e:
        raise TrainError(f"init_from {path}: {e}") from None
    src_cfg = TrainConfig(**ck["train_config"])
    new = cfg.init_new_stage - 1  # 0-based index of the inserted stage; -1 = none
    if src_spec.residual != spec.residual:
        raise TrainError(f"init_from {path}: its model ({src_spec.describe()}) does not have "
                         f"the layout of this config ({spec.describe()}): residual "
                         f"{src_spec.residual}, the config {spec.residual}")
    if cfg.init_new_branches:
        sources, added = _branch_sources(src_spec, spec, path)
    else:
        copied = [si for si in range(len(spec.stages)) if si != new]  # target of source stage
        same_layout = ([[b.label() for b in st.branches] for st in src_spec.stages]
                       == [[b.label() for b in spec.stages[si].branches] for si in copied])
        if not same_layout:
            without = f" without its stage {new + 1}" if new >= 0 else ""
            raise TrainError(f"init_from {path}: its model ({src_spec.describe()}) does not have "
                             f"the layout of this config{without} ({spec.describe()}); "
                             f"[train] init_new_branches starts added branches from it")
        sources = {(copied[si], bi): (si, bi) for si, bi, _ in src_spec.branches()}
        added = []
    for key in ("nf", "rc_channels"):
        if getattr(src_cfg, key) != getattr(cfg, key):
            raise TrainError(f"init_from {path}: it has {key}={getattr(src_cfg, key)}, the "
                             f"config {getattr(cfg, key)}")
    state = model.state_dict()  # an inserted stage keeps its fresh initialisation
    for (tsi, tbi), (ssi, sbi) in sources.items():
        prefix = f"blocks.{array_key(ssi, sbi)}."
        for name, value in weights.items():
            if name.startswith(prefix):
                state[f"blocks.{array_key(tsi, tbi)}.{name[len(prefix):]}"] = value
    if src_spec.scale != spec.scale:
        mix = subpixel_resampling(src_spec.scale, spec.scale)
        last = len(spec.stages) - 1
        for bi in range(len(spec.stages[last].branches)):
            for part in ("weight", "bias"):  # weight (out, in) and bias (out,) alike
                name = f"blocks.{array_key(last, bi)}.conv6.{part}"
                state[name] = mix @ state[name]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TrainError(f"init_from {path}: {str(e).splitlines()[0]}") from None
    fitted = ""
    if new >= 0:
        for blk in model.stage_blocks(new):
            pass_through_init(blk)
        mean_err, max_err = pass_through_error(model, new, cfg.seed)
        fitted = (f"; new stage {new + 1} set to pass its input through (mean |error| "
                  f"{mean_err:.2f} levels, max {max_err:.0f})")
    copies = "".join(f"; new branch {label} starts as a copy of {source}"
                     for label, source in added)
    which = "the weight EMA of " if cfg.init_weights == "ema" else ""
    return (f"network initialised from {which}{Path(path).name} (step {int(ck['step'])}, "
            f"x{src_spec.scale} -> x{spec.scale}){fitted}{copies}")


def _branch_sources(src_spec: ModelSpec, spec: ModelSpec, path) -> tuple[dict, list]:
    """``({(stage, branch): (stage, branch) of the source}, [(new label, source label)])``.

    A branch the source has (same stage, same label) is its own source; an added one starts
    from the first source branch of its stage with the same RC window and input count (e.g.
    rc3-D from rc3-S: the same RC window and an MLP of the same shape, reading other pixels)."""
    if len(src_spec.stages) != len(spec.stages):
        raise TrainError(f"init_from {path}: init_new_branches needs as many stages as the source "
                         f"({len(src_spec.stages)}), this config has {len(spec.stages)}")
    sources, added = {}, []
    for si, bi, br in spec.branches():
        src = src_spec.stages[si].branches
        labels = [b.label() for b in src]
        if br.label() in labels:
            sources[(si, bi)] = (si, labels.index(br.label()))
            continue
        like = [j for j, b in enumerate(src) if b.rc == br.rc and b.n_inputs == br.n_inputs]
        if not like:
            raise TrainError(f"init_from {path}: stage {si + 1} of the source has no branch with "
                             f"RC window {br.rc} and {br.n_inputs} input(s) to start "
                             f"{br.label()} from")
        sources[(si, bi)] = (si, like[0])
        added.append((f"s{si + 1} {br.label()}", src[like[0]].label()))
    return sources, added


def pass_through_init(block: Block) -> None:
    """Set a 1-output ``block`` so that ``round(127 * tanh)`` is its anchor pixel minus 127.

    A stage of such blocks outputs its input (``acc / (4 n) + 127``), so a stage inserted
    into a trained network (``[train] init_new_stage``) starts it where it was.  The RC window,
    if any, keeps only its centre position (its output is then a function ``q(x)`` of the
    pixel); ``conv1`` makes ramps ``relu(+-(a - t_k))`` of the anchor input ``a`` and ``conv6``
    combines them, by least squares over the 256 levels, into ``atanh`` of the wanted output.
    ``conv2..5`` keep their random initialisation with zero weight in ``conv6``, so they train
    from the first step.  The RC window's 8-bit tanh cannot tell every level apart at the
    extremes: there the stage passes the mean of the levels that share a code."""
    if block.n_outputs != 1:
        raise ValueError("only a 1-output block can pass its input through")
    nf = block.nf
    with torch.no_grad():
        levels = torch.arange(256, dtype=torch.float32)
        if block.rc is None:
            wanted = levels  # the stage level wanted at each anchor code
        else:
            block.rc.reset_parameters()
            centre = block.rc.window ** 2 // 2
            keep = block.rc.w1[centre].clone()
            block.rc.w1.zero_()
            block.rc.w1[centre] = keep  # every other position: slope 0, offset unchanged
            codes = block.rc(levels.view(1, 1, 1, 256) / 255.0).view(256)
            sums = torch.zeros(256).index_add_(0, codes.long(), levels)
            counts = torch.zeros(256).index_add_(0, codes.long(), torch.ones(256))
            hit = counts > 0
            # codes no pixel reaches (between hit ones) still sit on the 4D table's grid:
            # interpolate them so the table stays smooth
            wanted = torch.from_numpy(np.interp(levels.numpy(), levels[hit].numpy(),
                                                (sums[hit] / counts[hit]).numpy())).float()
        target = torch.atanh(torch.clamp(wanted - 127.0, -126.6, 126.6) / 127.0)
        a = levels / 255.0
        # ramps that open towards the nearer end (relu(t - a) below the middle, relu(a - t)
        # above it): atanh's large slope changes there then weigh small ramp values, so the
        # sum barely cancels and holds in bf16 (one-sided ramps lost up to 20 levels there)
        knots = torch.linspace(0.0, 1.0, nf + 2)[1:-1]  # no ramp that is zero on 0..1
        sign = torch.where(knots < 0.5, -1.0, 1.0)
        ramps = torch.relu(sign * (a[:, None] - knots[None, :]))  # (256, nf)
        design = torch.cat([ramps, torch.ones(256, 1)], 1).double()
        coef = torch.linalg.lstsq(design, target.double()[:, None]).solution[:, 0].float()
        block.conv1.weight.zero_()
        block.conv1.weight[:, 0] = sign
        block.conv1.bias.copy_(-sign * knots)
        block.conv6.weight.zero_()
        block.conv6.weight[0, :nf] = coef[:nf]
        block.conv6.bias.fill_(float(coef[nf]))


def pass_through_error(model: LUTNet, si: int, seed: int) -> tuple[float, float]:
    """Mean and max absolute difference, in levels, between stage ``si``'s 8-bit output and
    its input, on random 8-bit maps."""
    divisor, bias = model.spec.stage_rescale(si, interpolated=False)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (4, 1, 32, 32), generator=gen).float() / 255.0
    with torch.no_grad():
        out = torch.clamp(torch.round(model.stage_sum(si, x) / divisor + bias), 0, 255)
    err = (out - x * 255.0).abs()
    return float(err.mean()), float(err.max())


def validation_psnrs(rec: dict) -> dict[str, float]:
    """``{column: PSNR}`` of one validation record of ``log.jsonl``: one per set (``"PSNR"``
    for a run validated on one set), and ``"<column> EMA"`` for its weight EMA."""
    if "val" in rec:
        out = {k: v["psnr"] for k, v in rec["val"].items()}
    else:
        out = {"PSNR": rec["val_psnr"]}
    for k, v in rec.get("ema", {}).items():
        out[f"{k if 'val' in rec else 'PSNR'} EMA"] = v["psnr"]
    return out


def validate(model: LUTNet, val_dir, scale: int) -> tuple[float, float]:
    from rclut_numba.evaluation import evaluate

    was, precision = model.training, model.precision
    model.eval()
    model.set_precision("float32")  # score the float32 network, as eval-network does
    try:
        res = evaluate(model.upscale_uint8, val_dir, scale, out=lambda _line: None)
    finally:
        model.train(was)
        model.set_precision(precision)
    return res["mean_psnr"], res["mean_ssim"]


class _Progress:
    """tqdm bar on a terminal; otherwise (background runs, log files) a plain line every
    ``every`` steps, so the output stays readable when redirected."""

    def __init__(self, start: int, total: int, every: int, enabled: bool):
        self.start, self.total, self.every = start, total, max(1, every)
        self.t0 = time.time()
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, step: int, loss: float, lr: float):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3g}", lr=f"{lr:.2e}", refresh=False)
            return
        if step % self.every == 0 or step == self.total:
            done = step - self.start
            rate = done / max(1e-9, time.time() - self.t0)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            print(f"step {step}/{self.total}  loss {loss:.6g}  lr {lr:.3e}  "
                  f"{rate:.3g} it/s  ETA {_hms(eta)}", flush=True)

    def write(self, text: str):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _rss_gb() -> float | None:
    """Resident memory of this process in GiB (Linux), to spot a run whose memory grows."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 30, 3)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
    if not log_path.is_file():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    with atomic_write(log_path, "w") as f:
        f.write("".join(k + "\n" for k in keep))


# -- the loop ------------------------------------------------------------------------------------
def train(config, data_dirs, out, *, resume: bool = False, steps: int | None = None,
          device: str | None = "auto", overrides: dict | None = None,
          stop_after: int | None = None, threads: int | None = None,
          val_data: str | None = None, cache_dir=None, quiet: bool = False,
          data_shares=None) -> list[float]:
    """Train (or resume) a run; returns the per-step training losses of the steps it ran.

    ``data_shares``: one share of the samples per entry of ``data_dirs`` (``SRDataset``).

    ``stop_after``: stop (with a checkpoint) after that step, as if interrupted; the schedule
    still spans ``steps``.  Under ``torchrun`` this joins the process group itself.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    distributed = world > 1
    dev = resolve_device(device, local_rank)
    torch.set_num_threads(threads or default_threads(local_world))
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    main = rank == 0
    say = (lambda *_: None) if (quiet or not main) else (lambda s: print(s, flush=True))
    try:
        losses = _train(config, data_dirs, Path(out), resume, steps, dev, overrides,
                        stop_after, val_data, cache_dir, world, rank, main, say, quiet,
                        data_shares)
        if distributed:
            dist.barrier()  # rank 0 saves last; tear down the group together
        return losses
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(config, data_dirs, out, resume, steps, dev, overrides, stop_after, val_data,
           cache_dir, world, rank, main, say, quiet, data_shares):
    spec, cfg = load_config(config, overrides)
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {steps}")
        cfg.steps = steps
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.jsonl"

    ck = None
    if resume:
        ck = load_checkpoint(last_path) if last_path.exists() else None
        if ck is None:
            say(f"no checkpoint in {out}: starting a new run")
        else:
            if ModelSpec.from_json(ck["spec"]) != spec:
                raise TrainError(f"{last_path} was trained with another model "
                                 f"({ModelSpec.from_json(ck['spec']).describe()}); "
                                 f"config {config} describes {spec.describe()}")
            old = TrainConfig(**ck["train_config"])
            for key in ("nf", "rc_channels"):
                if getattr(old, key) != getattr(cfg, key):
                    raise TrainError(f"{last_path} has {key}={getattr(old, key)}, the config "
                                     f"{getattr(cfg, key)}")
            if steps is None:
                cfg.steps = old.steps  # keep the schedule the run started with
            at = int(ck["step"])
            if (cfg.cooldown_steps and at > cfg.cooldown_start
                    and (old.cooldown_start, old.cooldown_steps)
                    != (cfg.cooldown_start, cfg.cooldown_steps)):
                raise TrainError(f"{last_path} is at step {at}, past the cooldown's start "
                                 f"{cfg.cooldown_start}, and was not trained with that cooldown")
    elif last_path.exists():
        raise TrainError(f"{out} already holds a run ({last_path.name}); pass --resume to "
                         f"continue it or choose another --out")

    torch.manual_seed(cfg.seed)
    model = build_model(spec, cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.steps
    horizon = total  # where the run ends: its schedule's end or its cooldown's
    if cfg.cooldown_steps:
        horizon = cfg.cooldown_start + cfg.cooldown_steps
        if horizon > total:
            raise TrainError(f"the cooldown ends at step {horizon}, after the {total}-step "
                             f"schedule")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, cfg))
    start, best_psnr = 0, -math.inf
    if ck is None and cfg.init_from:
        source = Path(cfg.init_from)
        say(warm_start(model, cfg, source if source.is_absolute() else REPO_ROOT / source))
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start = int(ck["step"])
        # the loaded state keeps the schedule the run started with; a resume may change it
        # (--steps, --set lr=..., lr_min=...): the new one applies from the first resumed step
        # (the same values when nothing changed, so an uninterrupted run is reproduced exactly)
        sched.base_lrs = [cfg.lr] * len(opt.param_groups)
        for group in opt.param_groups:
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * lr_factor(start, total, cfg)
        best_psnr = ck.get("best_psnr", -math.inf)
        torch.set_rng_state(ck["rng"]["torch"])
        if dev.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"], dev)
        if main:
            _truncate_log(log_path, start)
        say(f"resumed {out} at step {start}/{total}")
    ema = None
    if cfg.ema_decay:
        kept = ck.get("ema") if ck is not None else None
        try:
            ema = WeightEMA(model, cfg.ema_decay, kept)
        except ValueError as e:
            raise TrainError(f"{last_path}: {e}") from None
        if ck is not None and kept is None:
            say(f"weight EMA (decay {cfg.ema_decay:g}) starts here, from the step-{start} weights")

    if main and ck is None:
        (out / "spec.json").write_text(spec.to_json())
        (out / "config.toml").write_text(_config_toml(spec, cfg))

    # Data: rank 0 builds the LR cache first so that other ranks only read it.
    cache = Path(cache_dir) if cache_dir else out / "cache"
    log_fn = say if main else (lambda *_: None)
    dataset = None
    if main:
        dataset = SRDataset(data_dirs, spec.scale, cfg.crop, cache, cfg.seed, log=log_fn,
                            flat_share=cfg.flat_share, synthetic_share=cfg.synthetic_share,
                            shares=data_shares)
    if world > 1:
        dist.barrier()
    if not main:
        dataset = SRDataset(data_dirs, spec.scale, cfg.crop, cache, cfg.seed, log=log_fn,
                            build_cache=False, flat_share=cfg.flat_share,
                            synthetic_share=cfg.synthetic_share, shares=data_shares)

    # Validation sets: one folder or several separated by commas; the first decides best.pt.
    val_dirs = []
    if cfg.val_every and main:
        for item in (val_data or cfg.val_data).split(","):
            vd = Path(item.strip())
            vd = vd if vd.is_absolute() or val_data else REPO_ROOT / vd
            if (vd / "HR").is_dir():
                val_dirs.append(vd)
            else:
                say(f"validation skipped: {vd} has no HR/ folder")

    # training only: validation, checkpoints and transfer use the float32 network. "auto" is
    # resolved on the machine at hand, so a resumed run may continue in another precision.
    precision, why = resolve_precision(cfg.training_precision, dev)
    before = ck.get("precision") if ck is not None else None
    since = f"; its steps so far ran in {before}" if before and before != precision else ""
    say(f"precision: {precision} ({why}){since}")
    model.set_precision(precision)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    model.train()

    def save(step, path=last_path):
        ckpt = {
            "format": "rclut-train-checkpoint", "version": CHECKPOINT_VERSION,
            "spec": spec.to_json(), "train_config": cfg.to_dict(),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "step": step, "best_psnr": best_psnr,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
            "data": {"seed": cfg.seed, "next_step": step},  # batches are a function of step
            "precision": precision,  # the resolved one of this process ("auto" in the config)
        }
        if ema is not None:
            ckpt["ema"] = ema.state_dict()
        atomic_torch_save(ckpt, path)

    pixel_loss = F.l1_loss if cfg.loss == "l1" else F.mse_loss
    losses: list[float] = []
    end = horizon if stop_after is None else min(horizon, stop_after)
    bar = _Progress(start, horizon, cfg.log_every or 100, enabled=main and not quiet)
    logf = open(log_path, "a") if main else None
    window, t_last, data_s = [], time.time(), 0.0
    stop = StopSignals().install()
    try:
        for step in range(start, end):
            t_data = time.perf_counter()
            lr_b, hr_b = dataset.batch(step, cfg.batch_size, rank, world)
            data_s += time.perf_counter() - t_data
            lr_b, hr_b = lr_b.to(dev, non_blocking=True), hr_b.to(dev, non_blocking=True)
            pred = net(lr_b)
            loss = pixel_loss(pred / 255.0, hr_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update()
            value = loss.detach()
            if world > 1:
                dist.all_reduce(value)  # SUM (gloo has no AVG); equal slices -> mean below
                value = value / world
            value = float(value)
            if not math.isfinite(value):
                raise TrainError(f"loss became {value} at step {step + 1}; lower the lr")
            losses.append(value)
            window.append(value)
            done = step + 1
            lr_now = opt.param_groups[0]["lr"]
            bar.update(done, value, lr_now)
            if main and cfg.log_every and (done % cfg.log_every == 0 or done == end):
                now = time.time()
                sps = (now - t_last) / len(window)
                rec = {"step": done, "loss": sum(window) / len(window), "lr": lr_now,
                       "s_per_step": sps, "data_share": data_s / len(window) / max(sps, 1e-9),
                       "eta_h": (horizon - done) * sps / 3600, "rss_gb": _rss_gb(),
                       "precision": precision,
                       "threads": torch.get_num_threads() * world}  # CPU hours: the stamp
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                window, t_last, data_s = [], now, 0.0
            if val_dirs and (done % cfg.val_every == 0 or done == horizon):
                scores = {vd.name: validate(model, vd, spec.scale) for vd in val_dirs}
                psnr, ssim = scores[val_dirs[0].name]
                rec = {"step": done, "val_psnr": psnr, "val_ssim": ssim}
                if len(val_dirs) > 1:
                    rec["val"] = {k: {"psnr": p, "ssim": q} for k, (p, q) in scores.items()}
                if ema is not None:
                    with ema.swapped_in():
                        ema_scores = {vd.name: validate(model, vd, spec.scale) for vd in val_dirs}
                    rec["ema"] = {k: {"psnr": p, "ssim": q} for k, (p, q) in ema_scores.items()}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                bar.write(f"step {done}: validation " + ", ".join(
                    f"{k} PSNR {p:.4f} SSIM {q:.4f}" for k, (p, q) in scores.items()))
                if ema is not None:
                    bar.write(f"step {done}: validation of the weight EMA " + ", ".join(
                        f"{k} PSNR {p:.4f}" for k, (p, _q) in ema_scores.items()))
                if psnr > best_psnr:
                    best_psnr = psnr
                    save(done, best_path)
                t_last = time.time()  # s_per_step counts training steps, not validation
            saved = (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == end
            if main and (saved or stop.signum is not None):
                save(done)
            if stop.signum is not None:
                raise TrainStopped(stop.signum, done)
    finally:
        stop.restore()
        bar.close()
        if logf is not None:
            logf.close()
    if main and end == horizon:
        say(f"finished {horizon} steps; checkpoint {last_path}")
    elif main:
        say(f"stopped after step {end}/{total}; continue with --resume")
    return losses


def _config_toml(spec: ModelSpec, cfg: TrainConfig) -> str:
    """The effective config, re-readable by ``load_config``."""
    lines = ["[model]", f"name = {json.dumps(spec.name)}", f"scale = {spec.scale}",
             f"interval = {spec.interval}", f"residual = {json.dumps(spec.residual)}",
             "stages = ["]
    for st in spec.stages:
        lines.append("  [" + ", ".join(json.dumps(b.label()) for b in st.branches) + "],")
    lines += ["]", "", "[train]"]
    for k, v in cfg.to_dict().items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"

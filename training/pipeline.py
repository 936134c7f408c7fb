"""``rclut-train pipeline CONFIG``: one declared recipe from images to a scored LUT bundle.

The config TOML holds the model (``[model]``), the network training (``[train]``) and:

    [pipeline]
    name = "rclut_x4"                 # results/<name>/ and the bundle's file name
    data = ["../shared/data/train"]   # HR folders (searched recursively) or training packs
                                      # (rclut-train pack: one .npz); relative: repo root
    data_shares = [0.6, 0.4]          # optional, one per data entry: each entry's share of the
                                      # samples (network and legs); default: by pixel count
    run = "runs/rclut_x4"             # working folder (git-ignored); default runs/<name>
    results = "results/rclut_x4"      # what is published; default results/<name>
    threads = 2                       # CPU threads of every stage (default: all cores)
    eval_sets = ["Set5", "Set14", "B100"]   # under ../shared/data/benchmark/, or paths
    report_every = 1000               # results.md is refreshed every N network steps
    transfer_checkpoint = "last"      # or "best" (best validation PSNR)
    transfer_weights = "network"      # or "ema": the checkpoint's weight EMA ([train] ema_decay)
    spread_rc = false                 # rclut-train transfer --spread-rc

    [[finetune.legs]]                 # LUT fine-tuning legs, run in order
    steps = 1500
    lr = 0.1
    lr_min = 0.005
    batch_size = 16                   # optional: crop (48), val_every (500), freeze_rc (false),
                                      # flat_weight (0: rclut-train finetune --flat-weight),
                                      # adam_eps (1e-8: --adam-eps)

Stages, each skipped when its output exists and resumed when half done (re-running the command
is always safe, and it is how a stopped pipeline continues):

1. ``train``: ``RUN/last.pt`` until its step is ``[train] steps`` (resumed in place; the
   schedule never restarts), ``results/<name>/results.md`` refreshed every ``report_every``
   steps with steps done, s/step, the validation curve and the ETA, beside a copy of the
   training log (``train_log.jsonl``) and the run's one resume point (``resume_point.pt``: a
   copy of ``RUN/last.pt`` with model, optimiser, schedule, RNG and data position). A run
   folder without ``last.pt`` (a fresh clone, a new machine) starts from that resume point,
   so committing it carries the run across machines; other checkpoints stay in ``RUN/``;
2. ``transfer``: ``RUN/transferred.npz``;
3. ``ft1`` .. ``ftN``: ``RUN/ftK.npz`` through ``RUN/ftK/`` (resumable runs of their own);
4. ``stamp``: ``RUN/<name>.npz``, the last bundle with its budget in ``spec.extra["training"]``
   (steps, wall and CPU hours of each part, read from the logs);
5. ``eval``: ``RUN/eval.json``, PSNR / SSIM of the bundle on every eval set (numba engine),
   and how far it moves flat grey (``rclut_numba.analysis.flat_field_deviation``);
6. ``results``: ``results/<name>/``: the config, the logs, the final network checkpoint, the
   bundle and ``results.md`` (the resume point is removed: the final checkpoint replaces it).
   Intermediate checkpoints never leave ``RUN/``.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from rclut_numba.fileio import atomic_write

from .config import ConfigError, TrainConfig, load_config
from .data import DataError, entry_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT.parent / "shared" / "data" / "benchmark"
RESUME_POINT = "resume_point.pt"  # results/<name>/: the one committed checkpoint of a live run

__all__ = ["FinetuneLeg", "PipelineConfig", "load_pipeline", "run_pipeline", "run_seconds"]


@dataclass
class FinetuneLeg:
    steps: int
    lr: float
    lr_min: float
    batch_size: int = 16
    crop: int = 48
    val_every: int = 500
    freeze_rc: bool = False
    flat_weight: float = 0.0
    adam_eps: float = 1e-8


@dataclass
class PipelineConfig:
    name: str
    data: list[str]
    data_shares: list[float] = field(default_factory=list)  # one per data entry; [] = by pixels
    run: str = ""
    results: str = ""
    threads: int = 0
    eval_sets: list[str] = field(default_factory=lambda: ["Set5", "Set14", "B100"])
    report_every: int = 1000
    transfer_checkpoint: str = "last"
    transfer_weights: str = "network"
    spread_rc: bool = False
    legs: list[FinetuneLeg] = field(default_factory=list)

    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else REPO_ROOT / q

    @property
    def run_dir(self) -> Path:
        return self.path(self.run or f"runs/{self.name}")

    @property
    def results_dir(self) -> Path:
        return self.path(self.results or f"results/{self.name}")

    @property
    def data_dirs(self) -> list[Path]:
        return [self.path(d) for d in self.data]


def _typed(table: dict, cls, where: str):
    """``cls(**table)`` with unknown keys and wrong types refused (the message names them)."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(k for k in known if k != 'legs')}")
    kinds = {"int": int, "float": (int, float), "str": str, "bool": bool,
             "list[str]": list, "list[float]": list, "list[FinetuneLeg]": list}
    for key, value in table.items():
        want = kinds[str(known[key].type)]
        if isinstance(value, bool) and want is not bool or not isinstance(value, want):
            raise ConfigError(f"{where}: {key} must be {known[key].type}, got {value!r}")
    try:
        return cls(**table)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_pipeline(path) -> tuple:
    """``(spec, TrainConfig, PipelineConfig)`` of a config file with a ``[pipeline]`` table."""
    path = Path(path)
    spec, cfg = load_config(path)
    data = tomllib.loads(path.read_text())
    table = data.get("pipeline")
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [pipeline] table (see training/pipeline.py)")
    pc = _typed(dict(table), PipelineConfig, f"{path} [pipeline]")
    legs = data.get("finetune", {}).get("legs", [])
    if not isinstance(legs, list):
        raise ConfigError(f"{path}: [finetune] legs must be a list of [[finetune.legs]] tables")
    pc.legs = [_typed(dict(leg), FinetuneLeg, f"{path} [[finetune.legs]] #{i + 1}")
               for i, leg in enumerate(legs)]
    if not pc.name or "/" in pc.name or pc.name.startswith("."):
        raise ConfigError(f"{path} [pipeline]: name must be a plain folder name, got {pc.name!r}")
    if not pc.data:
        raise ConfigError(f"{path} [pipeline]: data lists no training folder")
    if pc.data_shares:
        try:
            entry_weights(pc.data_shares, len(pc.data))
        except DataError as e:
            raise ConfigError(f"{path} [pipeline]: {e}") from None
    if pc.transfer_checkpoint not in ("last", "best"):
        raise ConfigError(f"{path} [pipeline]: transfer_checkpoint must be \"last\" or \"best\"")
    if pc.transfer_weights not in ("network", "ema"):
        raise ConfigError(f"{path} [pipeline]: transfer_weights must be \"network\" or \"ema\"")
    if pc.transfer_weights == "ema" and not cfg.ema_decay:
        raise ConfigError(f"{path} [pipeline]: transfer_weights = \"ema\" needs [train] "
                          f"ema_decay > 0")
    if cfg.cooldown_steps and cfg.cooldown_start + cfg.cooldown_steps != cfg.steps:
        raise ConfigError(f"{path} [train]: a cooldown branch ends the network, so "
                          f"cooldown_start + cooldown_steps must equal steps = {cfg.steps}")
    for i, leg in enumerate(pc.legs):
        if leg.steps < 1 or not 0 < leg.lr_min <= leg.lr:
            raise ConfigError(f"{path} [[finetune.legs]] #{i + 1}: needs steps >= 1 and "
                              f"0 < lr_min <= lr")
        if not 0 < leg.adam_eps < float("inf"):
            raise ConfigError(f"{path} [[finetune.legs]] #{i + 1}: adam_eps must be a "
                              f"finite number > 0")
        if not 0 <= leg.flat_weight < float("inf"):
            raise ConfigError(f"{path} [[finetune.legs]] #{i + 1}: flat_weight must be a "
                              f"finite number >= 0")
    return spec, cfg, pc


# -- budget from the logs ---------------------------------------------------------------------
def run_seconds(run: Path, threads: int, window: int = 10) -> tuple[int, float, float]:
    """(last step, seconds, CPU seconds) of a run: each logged interval's steps times the median
    seconds per step of the records within ``window`` of it, and that times the threads the
    interval ran on (its record's ``threads``; ``threads`` for logs written before records
    carried it).

    A median, not the logged times, so that time a run spent paused or sharing the cores with
    other jobs does not count as its cost; a local one, so that a run that changed speed on
    resuming is charged each part's own speed.  Threads per record, so that a network trained
    on 2 threads and a leg run on 1 are each charged what they used."""
    log = run / "log.jsonl"
    if not log.is_file():
        raise ConfigError(f"{log} not found")
    timed = sorted((r for r in _records(log) if "s_per_step" in r), key=lambda r: r["step"])
    if not timed:
        raise ConfigError(f"{log} has no timed steps")
    speeds = [r["s_per_step"] for r in timed]
    seconds, cpu_seconds, previous = 0.0, 0.0, 0
    for i, r in enumerate(timed):
        interval = (r["step"] - previous) * statistics.median(
            speeds[max(0, i - window):i + window + 1])
        seconds += interval
        cpu_seconds += interval * int(r.get("threads", threads))
        previous = r["step"]
    return previous, seconds, cpu_seconds


def _records(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return out


def run_precision(run: Path, cfg: TrainConfig) -> str:
    """The MLP precision(s) the run's logged steps ran in, in order ("float32, bf16" for a run
    resumed on another machine); the config's when the log names none (runs before "auto")."""
    log = run / "log.jsonl"
    seen = [r["precision"] for r in (_records(log) if log.is_file() else []) if "precision" in r]
    return ", ".join(dict.fromkeys(seen)) or cfg.training_precision


def _checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return 0
    from .train import load_checkpoint

    return int(load_checkpoint(path)["step"])


def _schedule_steps(run: Path, cfg: TrainConfig) -> int:
    """The length of the schedule the run's network is trained on: the checkpoint's own, which
    a snapshot of a longer run (a config whose [train] steps stop early) keeps."""
    if not (run / "last.pt").is_file():
        return cfg.steps
    from .train import load_checkpoint

    return int(load_checkpoint(run / "last.pt")["train_config"].get("steps", cfg.steps))


# -- results.md ------------------------------------------------------------------------------
def progress_markdown(pc: PipelineConfig, cfg: TrainConfig, stage: str,
                      config: str = "CONFIG") -> str:
    """Where the pipeline stands: steps done, s/step, the validation curve, ETA, scores."""
    run = pc.run_dir
    log = run / "log.jsonl"
    recs = _records(log) if log.is_file() else []
    timed = [r for r in recs if "s_per_step" in r]
    vals = [r for r in recs if "val_psnr" in r]
    done = max((r["step"] for r in recs), default=0)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# {pc.name}", "", f"Made by `rclut-train pipeline {config}` (stage now: "
             f"**{stage}**, updated {now}). Resume or continue it with the same command.", ""]
    recent = [r["s_per_step"] for r in timed[-20:]]
    sps = statistics.median(recent) if recent else None
    schedule = _schedule_steps(run, cfg)
    part = f" of a {schedule}-step schedule" if schedule != cfg.steps else ""
    cool = (f", from step {cfg.cooldown_start} a linear cooldown to 0 over "
            f"{cfg.cooldown_steps} steps" if cfg.cooldown_steps else "")
    lines.append(f"- network steps: {done} / {cfg.steps}{part} (batch {cfg.batch_size}, crop "
                 f"{cfg.crop}, lr {cfg.lr:g} -> {cfg.lr_min:g} cosine{cool}, precision "
                 f"{run_precision(run, cfg)})")
    if sps:
        eta = (cfg.steps - done) * sps / 3600
        lines.append(f"- s/step (median of the last {len(recent)} log records): {sps:.2f}; "
                     f"network ETA {eta:.1f} h of training at that speed")
    lines.append(f"- data: {', '.join(pc.data)}")
    if cfg.init_from:
        lines.append(f"- network started from `{cfg.init_from}` ([train] init_from)")
    if vals:
        from .train import validation_psnrs

        rows = [(r["step"], validation_psnrs(r)) for r in vals]
        names = sorted({k for _, cols in rows for k in cols})
        lines += ["", "Network validation PSNR (float32 network, Y, shave = scale):", "",
                  "| step | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        lines += [f"| {step} | " + " | ".join(f"{cols[n]:.4f}" if n in cols else ""
                                              for n in names) + " |" for step, cols in rows]
    ev = run / "eval.json"
    if ev.is_file():
        scores = json.loads(ev.read_text())
        flat = scores.pop("flat_field", None)
        lines += ["", "Bundle (numba engine), PSNR / SSIM:", "",
                  "| " + " | ".join(scores) + " |", "|" + "---:|" * len(scores),
                  "| " + " | ".join(f"{v['psnr']:.4f} / {v['ssim']:.4f}"
                                    for v in scores.values()) + " |"]
        if flat:
            lines += ["", f"Flat field: {flat['summary']}."]
    return "\n".join(lines) + "\n"


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def _report_progress(pc, cfg, stage, config: Path) -> None:
    """results/<name>/results.md, train_log.jsonl and, while the network is unfinished, its
    resume point, as the network run stands now."""
    _write_results_md(pc, cfg, stage, config)
    run = pc.run_dir
    if (run / "log.jsonl").is_file():
        _copy_atomic(run / "log.jsonl", pc.results_dir / "train_log.jsonl")
    if 0 < _checkpoint_step(run / "last.pt") < cfg.steps:
        _copy_atomic(run / "last.pt", pc.results_dir / RESUME_POINT)


def _restore_resume_point(pc, say) -> None:
    """A run folder without a checkpoint (a fresh clone, a new machine) starts from the
    committed resume point and its log, so the schedule continues at the next step."""
    run, point = pc.run_dir, pc.results_dir / RESUME_POINT
    if (run / "last.pt").exists() or not point.is_file():
        return
    step = _checkpoint_step(point)  # refuses a file that is not a training checkpoint
    _copy_atomic(point, run / "last.pt")
    if (pc.results_dir / "train_log.jsonl").is_file() and not (run / "log.jsonl").exists():
        _copy_atomic(pc.results_dir / "train_log.jsonl", run / "log.jsonl")
    say(f"pipeline {pc.name}: {run} has no checkpoint: continuing from the resume point "
        f"{point} at step {step}")


def _write_results_md(pc, cfg, stage, config: Path):
    try:
        shown = str(config.resolve().relative_to(REPO_ROOT))
    except ValueError:
        shown = str(config)
    pc.results_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(pc.results_dir / "results.md", "w") as f:
        f.write(progress_markdown(pc, cfg, stage, shown))


# -- the stages ------------------------------------------------------------------------------
def run_pipeline(config, *, threads: int | None = None, until: str | None = None,
                 stop_after: int | None = None, say=print) -> dict:
    """Run (or continue) every stage of ``config``; returns ``{stage: "done"|"skipped"}``.

    ``until``: stop after that stage (``train``, ``transfer``, ``ft1``.., ``stamp``, ``eval``).
    ``stop_after``: stop the network at that step (its schedule unchanged), with its progress
    and resume point published: a session's share of a long run.
    """
    import torch

    from .finetune import finetune
    from .train import TrainStopped, train

    config = Path(config)
    spec, cfg, pc = load_pipeline(config)
    threads = threads or pc.threads or None
    if threads:
        torch.set_num_threads(threads)
    run = pc.run_dir
    run.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}

    def finished(stage):
        status[stage] = status.get(stage, "done")
        return until == stage

    # 1. network
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {stop_after}")
    _restore_resume_point(pc, say)
    step = _checkpoint_step(run / "last.pt")
    if step >= cfg.steps:
        status["train"] = "skipped"
    while step < cfg.steps:
        if stop_after is not None and step >= stop_after:
            say(f"pipeline {pc.name}: stopped at step {step} (--stop-after {stop_after}); "
                f"resume point {pc.results_dir / RESUME_POINT}")
            status["train"] = f"stopped at step {step}"
            return status
        target = min(cfg.steps, (step // pc.report_every + 1) * pc.report_every,
                     stop_after or cfg.steps)
        say(f"pipeline {pc.name}: train to step {target} of {cfg.steps}")
        try:
            train(config, pc.data_dirs, run, resume=(run / "last.pt").exists(),
                  stop_after=target, threads=threads, cache_dir=run / "cache", quiet=False,
                  data_shares=pc.data_shares or None)
        except TrainStopped:
            _report_progress(pc, cfg, "train (stopped)", config)
            raise
        step = _checkpoint_step(run / "last.pt")
        _report_progress(pc, cfg, "train", config)
    if finished("train"):
        return status

    # 2. transfer
    transferred = run / "transferred.npz"
    if transferred.exists():
        status["transfer"] = "skipped"
    else:
        from .transfer import write_transferred_bundle

        write_transferred_bundle(run, transferred, which=pc.transfer_checkpoint,
                                 spread_rc=pc.spread_rc, ema=pc.transfer_weights == "ema",
                                 say=say)
    if finished("transfer"):
        return status

    # 3. LUT fine-tuning legs
    source = transferred
    val = str(BENCHMARKS / "Set5")
    for i, leg in enumerate(pc.legs, 1):
        out, leg_run = run / f"ft{i}.npz", run / f"ft{i}"
        if out.exists():
            status[f"ft{i}"] = "skipped"
        else:
            say(f"pipeline {pc.name}: LUT fine-tuning leg {i}/{len(pc.legs)}: {leg.steps} steps, "
                f"lr {leg.lr:g} -> {leg.lr_min:g}")
            finetune(source, pc.data_dirs, out, steps=leg.steps, batch_size=leg.batch_size,
                     crop=leg.crop, lr=leg.lr, lr_min=leg.lr_min, run_dir=leg_run,
                     resume=(leg_run / "last.pt").exists(), val_every=leg.val_every,
                     val_data=val, train_rc=not leg.freeze_rc, threads=threads,
                     flat_weight=leg.flat_weight, data_shares=pc.data_shares or None,
                     adam_eps=leg.adam_eps)
        source = out
        if finished(f"ft{i}"):
            return status

    # 4. stamp
    final = run / f"{pc.name}.npz"
    if _up_to_date(final, source):
        status["stamp"] = "skipped"
    else:
        if final.exists():
            say(f"pipeline {pc.name}: {final.name} is older than {source.name}: stamped again")
        stamp_budget(source, final, pc, cfg, threads or torch.get_num_threads(),
                     replace=final.exists())
    if finished("stamp"):
        return status

    # 5. eval
    ev = run / "eval.json"
    if _up_to_date(ev, final):
        status["eval"] = "skipped"
    else:
        scores = evaluate_bundle(final, pc.eval_sets, say)
        with atomic_write(ev, "w") as f:
            json.dump(scores, f, indent=1)
    if finished("eval"):
        return status

    # 6. results folder
    publish_results(pc, cfg, config, final)
    status["results"] = "done"
    return status


def _up_to_date(made: Path, source: Path) -> bool:
    """Whether ``made`` exists and is no older than what it was made from (a leg added to a
    finished config makes a newer last leg: the stamp and the eval are made again)."""
    return made.exists() and made.stat().st_mtime_ns >= source.stat().st_mtime_ns


def stamp_budget(source: Path, output: Path, pc: PipelineConfig, cfg: TrainConfig,
                 threads: int, replace: bool = False) -> None:
    """Copy the bundle ``source`` to ``output`` with its training budget in the spec
    (``replace``: atomically over an older stamp of the same run)."""
    from rclut_numba.bundle import load_bundle, save_bundle

    run = pc.run_dir
    spec, arrays = load_bundle(source)
    steps, wall, cpu = run_seconds(run, threads)
    ft_steps, ft_wall, ft_cpu = 0, 0.0, 0.0
    for i in range(1, len(pc.legs) + 1):
        s, w, c = run_seconds(run / f"ft{i}", threads)
        ft_steps, ft_wall, ft_cpu = ft_steps + s, ft_wall + w, ft_cpu + c
    spec.extra["training"] = {
        "steps": steps, "schedule_steps": _schedule_steps(run, cfg), "batch_size": cfg.batch_size,
        "crop": cfg.crop, "nf": cfg.nf, "precision": run_precision(run, cfg),
        "data": ", ".join(pc.data), "threads": round(cpu / wall, 1) if wall else threads,
        "wall_hours": round(wall / 3600, 2), "cpu_hours": round(cpu / 3600, 1),
        "finetune_steps": ft_steps, "finetune_wall_hours": round(ft_wall / 3600, 2),
        "finetune_cpu_hours": round(ft_cpu / 3600, 1),
        "commands": f"results/{pc.name}/",
    }
    if cfg.init_from:  # the steps above came on top of another run's network
        spec.extra["training"]["init_from"] = cfg.init_from
    save_bundle(output, spec, arrays, force=replace)


def evaluate_bundle(bundle: Path, sets, say=print) -> dict:
    from rclut_numba.analysis import flat_field_deviation, format_flat_field
    from rclut_numba.engine import load_model
    from rclut_numba.evaluation import evaluate

    from .train import torch_threads_kept

    model = load_model(bundle)
    scores = {}
    with torch_threads_kept():  # the engine would leave torch on numba's thread count
        for item in sets:
            folder = Path(item) if Path(item).is_absolute() else BENCHMARKS / item
            name = folder.name
            r = evaluate(model.upscale, folder, model.spec.scale, out=lambda _s: None)
            scores[name] = {"psnr": r["mean_psnr"], "ssim": r["mean_ssim"]}
            say(f"  {name}: PSNR {r['mean_psnr']:.4f} SSIM {r['mean_ssim']:.4f}")
        flat = flat_field_deviation(model)
    scores["flat_field"] = {"max": int(flat.max()), "levels_over_1": int((flat > 1).sum()),
                            "summary": format_flat_field(flat)}
    say(f"  flat field: {scores['flat_field']['summary']}")
    return scores


def publish_results(pc: PipelineConfig, cfg: TrainConfig, config: Path, final: Path) -> None:
    """results/<name>/: config, logs, final network checkpoint, bundle, results.md."""
    run, dest = pc.run_dir, pc.results_dir
    dest.mkdir(parents=True, exist_ok=True)
    copies = {config: dest / "config.toml", run / "log.jsonl": dest / "train_log.jsonl",
              run / "last.pt": dest / f"network_step{cfg.steps}.pt", final: dest / final.name}
    for i in range(1, len(pc.legs) + 1):
        copies[run / f"ft{i}" / "log.jsonl"] = dest / f"finetune{i}_log.jsonl"
    for src, dst in copies.items():
        if src.resolve() != dst.resolve():
            _copy_atomic(src, dst)
    (dest / RESUME_POINT).unlink(missing_ok=True)  # the final network checkpoint replaces it
    _write_results_md(pc, cfg, "done", config)

"""Training configuration: the ``[train]`` table of a config file (the ``[model]`` table is a
:class:`rclut_numba.spec.ModelSpec`, read by ``ModelSpec.from_toml``).

Unknown keys and wrong types are errors (a typo must not silently train with a default).
``overrides`` (``{"nf": "4", "steps": "3"}``, e.g. from ``--set nf=4``) are parsed as TOML
values and applied on top of the file.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rclut_numba.spec import ModelSpec, SpecError

# "float32": the reference arithmetic; "bf16": training.dense_mlp (fused bfloat16 MLP with a
# hand-written backward); "bf16-autocast": the earlier autocast path, kept for comparison.
PRECISIONS = ("float32", "bf16", "bf16-autocast")
# "auto": resolved per machine when a run starts (training/precision.py)
CONFIG_PRECISIONS = ("auto", *PRECISIONS)
LOSSES = ("mse", "l1")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


@dataclass
class TrainConfig:
    nf: int = 64                 # filters per layer (MuLUT: 64)
    rc_channels: int = 0         # hidden width C of each RC position's Linear(1,C)->Linear(C,1);
                                 # 0 = nf
    batch_size: int = 32         # global batch (split across data-parallel processes)
    crop: int = 48               # LR crop side; the HR crop is scale * crop
    steps: int = 200000
    lr: float = 1e-3             # cosine schedule from lr to lr_min over `steps`
    lr_min: float = 1e-4
    weight_decay: float = 0.0
    loss: str = "mse"            # pixel loss on [0, 1]: "mse" (PSNR's own) or "l1" (LOSSES)
    val_every: int = 2000        # validation PSNR on val_data every N steps (0 = never)
    val_data: str = "../shared/data/benchmark/Set5"  # relative paths: from the repository root
    ckpt_every: int = 1000       # checkpoint every N steps (and at the end / when stopped)
    log_every: int = 100         # loss line in log.jsonl and on stdout every N steps
    seed: int = 0
    precision: str = "auto"      # how the block MLPs train: "auto" (bf16 where the hardware
                                 # multiplies it natively, else float32) or one of PRECISIONS
                                 # above; RC modules, tanh, rounding, stage sums, validation and
                                 # checkpoints are float32 in every precision
    amp: str = ""                # legacy (checkpoints before `precision`): "bf16" selects
                                 # precision "bf16-autocast"
    flat_share: float = 0.0      # share of samples that are flat grey crops (training/data.py)
    synthetic_share: float = 0.0  # share of samples drawn: edges, strokes, grids, screentone
                                  # (training/synthetic.py)
    cooldown_start: int = 0      # a cooldown branch of a long schedule (warmup-stable-decay): from
    cooldown_steps: int = 0      # this step the lr falls linearly from the schedule's value there
                                 # to 0 over cooldown_steps, where the run ends; 0 steps = off
    ema_decay: float = 0.0       # > 0: keep an exponential moving average of the weights with
                                 # this decay (training/ema.py), validated and checkpointed
    init_from: str = ""          # a training checkpoint to start the network from (a new run
                                 # only; relative paths from the repository root): same layout,
                                 # any scale, e.g. x2 from the x4 default (train.warm_start)
    init_weights: str = "network"  # with init_from: "ema" starts from the checkpoint's weight
                                   # EMA instead of its weights (a long run at peak lr)
    init_new_stage: int = 0      # with init_from: this model's stage k (1-based, not the last)
                                 # is new, set to pass its input through; the source has
                                 # every other stage (train.warm_start); 0 = none
    init_new_branches: bool = False  # with init_from: branches the source lacks (by stage and
                                     # label) start as copies of a source branch of their stage
                                     # with the same RC window and input count (train.warm_start)
    compile: bool = False        # torch.compile the training forward (measured ~7% on CPU, ~45 s
                                 # to compile)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def training_precision(self) -> str:
        """The MLP precision to train with (the legacy ``amp = "bf16"`` wins if set)."""
        return "bf16-autocast" if self.amp == "bf16" else self.precision


def _coerce(name: str, value, want):
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"[train] {name} must be true or false, got {value!r}")
        return value
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, want) or isinstance(value, bool):
        raise ConfigError(f"[train] {name} must be {want.__name__}, got {value!r}")
    return value


def parse_overrides(items) -> dict:
    """``["nf=4", "lr=1e-3"]`` -> ``{"nf": 4, "lr": 0.001}`` (values parsed as TOML)."""
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key = key.strip().removeprefix("train.")
        try:
            out[key] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw.strip()  # a bare string such as a path
    return out


def load_config(path, overrides: dict | None = None) -> tuple[ModelSpec, TrainConfig]:
    path = Path(path)
    try:
        spec = ModelSpec.from_toml(path)
    except SpecError as e:
        raise ConfigError(str(e)) from None
    data = tomllib.loads(path.read_text())  # readable: from_toml just parsed it
    table = dict(data.get("train", {}))
    table.update(overrides or {})
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown [train] key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(known)}")
    types = {"int": int, "float": float, "str": str, "bool": bool}
    values = {k: _coerce(k, v, types[known[k].type]) for k, v in table.items()}
    cfg = TrainConfig(**values)
    for key in ("nf", "batch_size", "crop", "steps"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{path}: [train] {key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("rc_channels", "val_every", "ckpt_every", "log_every", "cooldown_start",
                "cooldown_steps"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{path}: [train] {key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.amp not in ("", "bf16"):
        raise ConfigError(f"{path}: [train] amp must be \"\" or \"bf16\", got {cfg.amp!r}")
    if cfg.precision not in CONFIG_PRECISIONS:
        raise ConfigError(f"{path}: [train] precision must be one of "
                          f"{', '.join(CONFIG_PRECISIONS)}, got {cfg.precision!r}")
    if cfg.loss not in LOSSES:
        raise ConfigError(f"{path}: [train] loss must be one of {', '.join(LOSSES)}, got "
                          f"{cfg.loss!r}")
    if not 0 < cfg.lr_min <= cfg.lr:
        raise ConfigError(f"{path}: [train] needs 0 < lr_min <= lr, got lr={cfg.lr}, "
                          f"lr_min={cfg.lr_min}")
    for key in ("flat_share", "synthetic_share", "ema_decay"):
        if not 0 <= getattr(cfg, key) < 1:
            raise ConfigError(f"{path}: [train] {key} must be in [0, 1), got "
                              f"{getattr(cfg, key)}")
    if cfg.init_new_stage and not (cfg.init_from and 1 <= cfg.init_new_stage < len(spec.stages)):
        raise ConfigError(f"{path}: [train] init_new_stage needs init_from and a stage from 1 to "
                          f"{len(spec.stages) - 1} (the last stage cannot be new), got "
                          f"{cfg.init_new_stage}")
    if cfg.init_weights not in ("network", "ema"):
        raise ConfigError(f"{path}: [train] init_weights must be \"network\" or \"ema\", got "
                          f"{cfg.init_weights!r}")
    if cfg.init_weights == "ema" and not cfg.init_from:
        raise ConfigError(f"{path}: [train] init_weights = \"ema\" needs init_from")
    if cfg.init_new_branches and not cfg.init_from:
        raise ConfigError(f"{path}: [train] init_new_branches needs init_from")
    if cfg.init_new_branches and cfg.init_new_stage:
        raise ConfigError(f"{path}: [train] init_new_branches and init_new_stage cannot be "
                          f"combined; add the stage first, then the branches")
    return spec, cfg

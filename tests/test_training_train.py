"""training.train / training.cli: every config trains, exact resume, CLI errors, DDP, eval."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.cli import main as cli_main
from training.data import synthetic_images
from training.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.toml"))
SHARED = ROOT.parent / "shared"
SHARED_TRAIN = SHARED / "data" / "train" / "T91"
SET5 = SHARED / "data" / "benchmark" / "Set5"
MULUT_NPZ = SHARED / "mulut" / "network_2022.npz"
TINY = ["nf=4", "rc_channels=3", "batch_size=2", "crop=12", "log_every=1", "val_every=0",
        "ckpt_every=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A few training images: three real ones from ../shared when present, else synthetic."""
    d = tmp_path_factory.mktemp("train_images")
    real = sorted(SHARED_TRAIN.glob("*.png"))[:3] if SHARED_TRAIN.is_dir() else []
    if real:
        for p in real:
            shutil.copy(p, d / p.name)
    else:
        synthetic_images(d, n=3, size=96)
    return d


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lr_cache")


def _overrides(extra=()):
    from training.config import parse_overrides
    return parse_overrides(TINY + list(extra))


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()
            if "loss" in json.loads(x)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains_a_few_steps(config, data_dir, cache_dir, tmp_path):
    run = tmp_path / "run"
    # cooldown off: a branch's cooldown ends past these 2 steps (rclut_x2: from step 800)
    # and no init_from (nor the branches or EMA it would seed): its network is full-size
    # (test_configs_init_from_fits checks it)
    losses = train(config, [data_dir], run, steps=2, device="cpu", cache_dir=cache_dir,
                   overrides=_overrides(["cooldown_steps=0", "init_from=''",
                                         "init_new_branches=false", "init_weights='network'"]),
                   quiet=True)
    assert len(losses) == 2 and all(v == v and v < 10 for v in losses)
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] == 2 and ck["format"] == "rclut-train-checkpoint"
    assert _losses(run) == losses
    assert (run / "spec.json").is_file() and (run / "config.toml").is_file()


def test_resume_gives_identical_losses(data_dir, cache_dir, tmp_path):
    cfg = ROOT / "training" / "configs" / "rclut.toml"  # RC modules, 1-D tables, two stages
    full = train(cfg, [data_dir], tmp_path / "a", steps=5, device="cpu",
                 overrides=_overrides(), cache_dir=cache_dir, quiet=True)
    first = train(cfg, [data_dir], tmp_path / "b", steps=5, device="cpu", stop_after=3,
                  overrides=_overrides(), cache_dir=cache_dir, quiet=True)
    rest = train(cfg, [data_dir], tmp_path / "b", resume=True, device="cpu",
                 overrides=_overrides(), cache_dir=cache_dir, quiet=True)
    assert len(first) == 3 and len(rest) == 2
    assert first + rest == full  # bit-identical, not approximately
    assert _losses(tmp_path / "b") == full
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_new_schedule_uses_it_from_the_first_step(data_dir, cache_dir, tmp_path,
                                                                monkeypatch):
    from training.train import cosine_factor
    cfg = ROOT / "training" / "configs" / "tiny.toml"
    run = tmp_path / "run"
    train(cfg, [data_dir], run, steps=4, device="cpu", stop_after=2,
          overrides=_overrides(["lr=1e-3", "lr_min=1e-4"]), cache_dir=cache_dir, quiet=True)
    used = []  # the lr each optimiser step runs with
    adam_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    # resumed at step 2 with a lower peak, a lower floor and a longer schedule
    train(cfg, [data_dir], run, steps=6, resume=True, device="cpu",
          overrides=_overrides(["lr=5e-4", "lr_min=1e-5"]), cache_dir=cache_dir, quiet=True)
    expected = [5e-4 * cosine_factor(s, 6, 5e-4, 1e-5) for s in range(2, 6)]
    assert used == pytest.approx(expected, rel=1e-12)


def test_a_cooldown_branch_decays_linearly_to_zero_and_ends_the_run(data_dir, cache_dir,
                                                                     tmp_path, monkeypatch):
    """A branch of a 10-step run resumed at step 2 with a cooldown from step 3 over 4 steps:
    the schedule's lr at steps 2, then 4/4 .. 1/4 of its step-3 value, and the run ends at 7."""
    from training.train import cosine_factor
    cfg = ROOT / "training" / "configs" / "tiny.toml"
    run = tmp_path / "run"
    train(cfg, [data_dir], run, steps=10, device="cpu", stop_after=2, overrides=_overrides(),
          cache_dir=cache_dir, quiet=True)
    used = []
    adam_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train(cfg, [data_dir], run, resume=True, device="cpu", cache_dir=cache_dir, quiet=True,
          overrides=_overrides(["cooldown_start=3", "cooldown_steps=4"]))
    ck = torch.load(run / "last.pt", weights_only=False)
    lr, lr_min = ck["train_config"]["lr"], ck["train_config"]["lr_min"]
    at3 = lr * cosine_factor(3, 10, lr, lr_min)
    expected = [lr * cosine_factor(2, 10, lr, lr_min)] + [at3 * k / 4 for k in (4, 3, 2, 1)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert ck["step"] == 7


def test_a_cooldown_refuses_a_checkpoint_already_past_its_start(data_dir, cache_dir, tmp_path):
    from training.train import TrainError
    cfg = ROOT / "training" / "configs" / "tiny.toml"
    run = tmp_path / "run"
    train(cfg, [data_dir], run, steps=10, device="cpu", stop_after=4, overrides=_overrides(),
          cache_dir=cache_dir, quiet=True)
    with pytest.raises(TrainError, match="past the cooldown's start 3"):
        train(cfg, [data_dir], run, resume=True, device="cpu", cache_dir=cache_dir, quiet=True,
              overrides=_overrides(["cooldown_start=3", "cooldown_steps=4"]))
    with pytest.raises(TrainError, match="the cooldown ends at step 14, after the 10-step"):
        train(cfg, [data_dir], run, resume=True, device="cpu", cache_dir=cache_dir, quiet=True,
              overrides=_overrides(["cooldown_start=10", "cooldown_steps=4"]))


def test_validation_and_eval_network_on_a_checkpoint(data_dir, cache_dir, tmp_path, capsys):
    val = tmp_path / "val"
    synthetic_images(val / "HR", n=2, size=48, seed=3)
    run = tmp_path / "run"
    train(ROOT / "training" / "configs" / "srlut.toml", [data_dir], run, steps=2, device="cpu",
          overrides=_overrides(["val_every=2"]), val_data=str(val), cache_dir=cache_dir,
          quiet=True)
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_psnr" in r for r in recs) and (run / "best.pt").is_file()
    capsys.readouterr()
    assert cli_main(["eval-network", "--weights", str(run / "last.pt"), "--data", str(val)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mean PSNR ") and " SSIM " in last


def test_existing_run_needs_resume_and_cli_errors_are_one_line(data_dir, tmp_path, capsys):
    cfg = str(ROOT / "training" / "configs" / "tiny.toml")
    base = ["train", "--config", cfg, "--data", str(data_dir), "--quiet", "--device", "cpu",
            "--cache", str(tmp_path / "c"), "--set", "crop=12"]
    assert cli_main(base + ["--out", str(tmp_path / "r"), "--steps", "1"]) == 0
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text('[model]\nname = "x"\nscale = 4\nstages = [["Q"]]\n')
    cases = [
        base + ["--out", str(tmp_path / "r"), "--steps", "1"],                # run exists
        ["train", "--config", str(tmp_path / "nope.toml"), "--data", str(data_dir), "--out",
         str(tmp_path / "r2")],                                              # missing config
        ["train", "--config", str(bad_cfg), "--data", str(data_dir), "--out", str(tmp_path / "r3")],
        base + ["--out", str(tmp_path / "r4"), "--set", "nff=3"],            # unknown key
        ["train", "--config", cfg, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r5")],
        ["eval-network", "--config", cfg, "--weights", str(tmp_path / "w.npz"), "--data", "x"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("rclut-train: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err


@pytest.mark.skipif(not (MULUT_NPZ.is_file() and (SET5 / "HR").is_dir()),
                    reason="../shared MuLUT weights or Set5 not present")
def test_eval_network_mulut_weights_set5():
    # The published network scores 30.6079 dB on Set5 (MuLUT's own training log).
    out = subprocess.run(
        [sys.executable, "-m", "training.cli", "eval-network", "--config",
         str(ROOT / "training" / "configs" / "mulut_sdy_x2.toml"), "--weights", str(MULUT_NPZ),
         "--data", str(SET5)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1].split()
    assert last[:2] == ["mean", "PSNR"]
    assert abs(float(last[2]) - 30.608) <= 0.002, last


def test_ddp_two_processes_gloo_match_one_process(data_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo), 1 sample each == 1 process with the batch of 2."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed next to the Python interpreter")
    cfg = ROOT / "training" / "configs" / "mulut_sdy_x2.toml"
    sets = []
    for kv in TINY:
        sets += ["--set", kv]
    common = ["train", "--config", str(cfg), "--data", str(data_dir), "--steps", "3",
              "--device", "cpu", "--threads", "1", "--cache", str(tmp_path / "cache"), *sets]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "training.cli", *common, "--out",
                             str(tmp_path / "one")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                          "training.cli", *common, "--out", str(tmp_path / "two")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    assert one[0] == pytest.approx(two[0], rel=1e-6)  # same initial weights, same samples
    assert two == pytest.approx(one, rel=1e-3)        # averaged gradients: same updates


@pytest.mark.parametrize("setting", ['precision="bf16"', 'precision="bf16-autocast"',
                                     'amp="bf16"', 'precision="float32"'])
def test_precisions_train_and_stay_close(setting, data_dir, cache_dir, tmp_path):
    from rclut_numba.spec import mulut_sdy_x2
    from training.config import TrainConfig
    from training.networks import LUTNet

    losses = train(ROOT / "training" / "configs" / "rc_srlut.toml", [data_dir], tmp_path / "r",
                   steps=2, device="cpu", overrides=_overrides([setting]),
                   cache_dir=cache_dir, quiet=True)
    assert len(losses) == 2
    key, value = setting.split("=")
    precision = TrainConfig(**{key: value.strip('"')}).training_precision
    torch.manual_seed(0)
    model = LUTNet(mulut_sdy_x2(), nf=8)
    x = torch.randint(0, 256, (2, 1, 12, 12), generator=torch.Generator().manual_seed(0)) / 255.0
    ref = model(x)
    model.set_precision(precision)
    low = model(x)
    assert low.dtype == torch.float32 and torch.equal(low, low.round())
    # bf16 matmuls: small, not bit-exact, differences; float32 is the reference itself
    assert (low - ref).abs().mean() < (2.0 if precision != "float32" else 1e-12)


def test_sigterm_checkpoints_the_step_in_progress(data_dir, cache_dir, tmp_path):
    """SIGTERM mid-run: the step in progress is checkpointed (not the last ckpt_every
    multiple), the exit code is 143, and --resume continues from exactly that step."""
    import signal

    from processes import wait_for_log_lines

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.cli", "train", "--config",
           str(ROOT / "training" / "configs" / "srlut.toml"), "--data", str(data_dir),
           "--out", str(run), "--cache", str(cache_dir), "--threads", "1", "--steps", "100000"]
    for item in TINY[:-1] + ["ckpt_every=100000"]:
        cmd += ["--set", item]
    env = dict(os.environ, RCLUT_ALLOCATOR="system")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = run / "log.jsonl"
    wait_for_log_lines(log, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after step" in err and "Traceback" not in err
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] >= 3
    logged = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert max(logged) == ck["step"]
    assert not list(run.glob("*.tmp"))
    losses = train(ROOT / "training" / "configs" / "srlut.toml", [data_dir], run, resume=True,
                   device="cpu", overrides=_overrides(["ckpt_every=100000"]),
                   stop_after=ck["step"] + 2, cache_dir=cache_dir, quiet=True, threads=1)
    assert len(losses) == 2


def test_subpixel_resampling_averages_and_interpolates():
    from training.train import subpixel_resampling
    assert torch.equal(subpixel_resampling(4, 4), torch.eye(16))
    to_x2 = subpixel_resampling(4, 2)
    # x2 subpixel (0, 1) is the mean of x4 subpixels (0, 2), (0, 3), (1, 2), (1, 3)
    want = torch.zeros(16)
    want[[2, 3, 6, 7]] = 0.25
    assert torch.allclose(to_x2[1], want)
    to_x3 = subpixel_resampling(4, 3)
    assert torch.allclose(to_x3.sum(1), torch.ones(9))
    # a ramp along x over the x4 subpixel centres is sampled at the x3 centres exactly
    ramp = torch.tensor([(dx + 0.5) / 4 for dy in range(4) for dx in range(4)])
    assert torch.allclose(to_x3 @ ramp,
                          torch.tensor([(dx + 0.5) / 3 for dy in range(3) for dx in range(3)]))


def test_init_from_starts_an_x2_run_from_an_x4_network(data_dir, cache_dir, tmp_path):
    from training.config import load_config
    from training.train import TrainError, build_model, subpixel_resampling, warm_start

    cfg4 = ROOT / "training" / "configs" / "rclut.toml"
    train(cfg4, [data_dir], tmp_path / "x4", steps=2, device="cpu", cache_dir=cache_dir,
          overrides=_overrides(), quiet=True)
    source = torch.load(tmp_path / "x4" / "last.pt", weights_only=False)["model"]
    cfg2 = ROOT / "training" / "configs" / "rclut_x2.toml"
    overrides = _overrides([f"init_from='{tmp_path / 'x4' / 'last.pt'}'"])
    spec, cfg = load_config(cfg2, overrides)
    model = build_model(spec, cfg)
    assert "x4 -> x2" in warm_start(model, cfg, cfg.init_from)
    state = model.state_dict()
    mix = subpixel_resampling(4, 2)
    for name, value in source.items():
        if name.startswith("blocks.s2_") and ".conv6." in name:
            assert torch.allclose(state[name], mix @ value)
        else:
            assert torch.equal(state[name], value), name
    # the run itself starts from the checkpoint and trains
    losses = train(cfg2, [data_dir], tmp_path / "x2", steps=2, device="cpu",
                   cache_dir=cache_dir, overrides=overrides, quiet=True)
    assert len(losses) == 2 and all(v == v for v in losses)

    # another layout or width is refused in one line that names the checkpoint
    for config, extra, why in ((ROOT / "training" / "configs" / "srlut.toml", [], "layout"),
                               (cfg2, ["nf=5"], "nf=4")):
        spec, cfg = load_config(config, _overrides(extra))
        with pytest.raises(TrainError, match=why) as err:
            warm_start(build_model(spec, cfg), cfg, tmp_path / "x4" / "last.pt")
        assert "\n" not in str(err.value) and "last.pt" in str(err.value)


def test_init_weights_ema_starts_from_the_weight_ema(data_dir, cache_dir, tmp_path):
    from training.config import ConfigError, load_config
    from training.train import TrainError, build_model, warm_start

    cfg4 = ROOT / "training" / "configs" / "rclut.toml"
    train(cfg4, [data_dir], tmp_path / "ema", steps=3, device="cpu", cache_dir=cache_dir,
          overrides=_overrides(["ema_decay=0.5"]), quiet=True)
    ck = torch.load(tmp_path / "ema" / "last.pt", weights_only=False)
    moved = [k for k in ck["ema"] if not torch.equal(ck["ema"][k], ck["model"][k])]
    assert moved  # the EMA lags the weights, so the test can tell them apart
    for weights, expected in (("ema", {**ck["model"], **ck["ema"]}), ("network", ck["model"])):
        spec, cfg = load_config(cfg4, _overrides([f"init_from='{tmp_path / 'ema' / 'last.pt'}'",
                                                  f"init_weights='{weights}'"]))
        model = build_model(spec, cfg)
        assert ("weight EMA" in warm_start(model, cfg, cfg.init_from)) == (weights == "ema")
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())

    # a checkpoint without an EMA is refused in one line; the key is checked when loaded
    train(cfg4, [data_dir], tmp_path / "plain", steps=1, device="cpu", cache_dir=cache_dir,
          overrides=_overrides(["ema_decay=0"]), quiet=True)
    spec, cfg = load_config(cfg4, _overrides([f"init_from='{tmp_path / 'plain' / 'last.pt'}'",
                                              "init_weights='ema'"]))
    with pytest.raises(TrainError, match="holds no EMA weights") as err:
        warm_start(build_model(spec, cfg), cfg, cfg.init_from)
    assert "\n" not in str(err.value)
    for extra, why in ((["init_weights='mean'"], "must be"),
                       (["init_weights='ema'", "init_from=''"], "needs init_from")):
        with pytest.raises(ConfigError, match=why):
            load_config(cfg4, _overrides(extra))


@pytest.mark.parametrize("config", [c for c in CONFIGS if "init_from" in c.read_text()],
                         ids=lambda p: p.stem)
def test_configs_init_from_fits(config, tmp_path):
    """A shipped config's init_from fits its full-size network: a committed checkpoint, or
    ``runs/NAME/last.pt`` of the config before it in a chain (its [pipeline] name is NAME;
    runs/ is not committed, so that network is built from the config)."""
    from training.config import load_config
    from training.pipeline import load_pipeline
    from training.train import CHECKPOINT_VERSION, build_model, warm_start

    spec, cfg = load_config(config)
    source = Path(cfg.init_from)
    assert cfg.init_from and not source.is_absolute()
    if source.parts[0] == "runs":
        assert source.name == "last.pt" and len(source.parts) == 3, cfg.init_from
        makers = [c for c in CONFIGS if "[pipeline]" in c.read_text()
                  and load_pipeline(c)[2].name == source.parts[1]]
        assert len(makers) == 1, f"no config (or several) makes {cfg.init_from}"
        src_spec, src_cfg = load_config(makers[0])
        source = tmp_path / "last.pt"
        state = build_model(src_spec, src_cfg).state_dict()
        ck = {"format": "rclut-train-checkpoint", "version": CHECKPOINT_VERSION,
              "spec": src_spec.to_json(), "train_config": src_cfg.to_dict(), "model": state,
              "step": 1}
        if src_cfg.ema_decay:  # the maker keeps a weight EMA (init_weights = "ema" reads it)
            ck["ema"] = {k: v.clone() for k, v in state.items()}
        torch.save(ck, source)
    warm_start(build_model(spec, cfg), cfg, ROOT / source)


def _spec(stages, scale=2):
    from rclut_numba.spec import ModelSpec
    return ModelSpec.from_dict({"name": "t", "scale": scale, "residual": True,
                                "stages": [[{"pattern": p, "rc": rc} for p, rc in st]
                                           for st in stages]})


@pytest.mark.parametrize("branches, mean_max, max_max", [
    ([("S", 0), ("D", 0), ("Y", 0)], 0.1, 2),  # exact but for LS wiggle and 255 -> 254
    ([("S", 3), ("S", 7)], 1.0, 8),            # the RC window's 8-bit tanh merges extremes
])
def test_pass_through_init_makes_a_stage_output_its_input(branches, mean_max, max_max):
    from training.networks import LUTNet
    from training.train import pass_through_error, pass_through_init

    torch.manual_seed(0)
    model = LUTNet(_spec([[("S", 0)], branches, [("S", 0)]]), nf=64, rc_channels=8)
    mean0, _ = pass_through_error(model, 1, seed=1)
    for blk in model.stage_blocks(1):
        pass_through_init(blk)
    mean, worst = pass_through_error(model, 1, seed=1)
    assert mean0 > 20 and mean < mean_max and worst <= max_max
    model.set_precision("bf16")  # how it trains where bf16 is native: nearly as close
    mean_bf16, worst_bf16 = pass_through_error(model, 1, seed=1)
    assert mean_bf16 < mean + 0.2 and worst_bf16 <= max_max + 2
    # conv2..5 still carry their random weights (they train from the first step) and the
    # pass-through does not depend on them: their conv6 columns are zero
    blk = model.stage_blocks(1)[0]
    assert blk.conv2.weight.abs().sum() > 0 and blk.conv6.weight[:, 64:].abs().sum() == 0
    with pytest.raises(ValueError, match="1-output"):
        pass_through_init(model.stage_blocks(2)[0])


def test_init_new_stage_inserts_a_pass_through_stage(tmp_path):
    """x4 two stages -> x2 three stages: stages 1 and 3 copied, stage 2 passes its input
    through, so the deeper network starts as the source's network resampled to x2."""
    from training.config import ConfigError, TrainConfig, load_config
    from training.train import (
        CHECKPOINT_VERSION,
        TrainError,
        build_model,
        subpixel_resampling,
        warm_start,
    )

    torch.manual_seed(0)
    src_spec = _spec([[("S", 0), ("D", 0)], [("S", 0)]], scale=4)
    src_cfg = TrainConfig(nf=64, rc_channels=8)
    source = build_model(src_spec, src_cfg)
    for p in source.parameters():  # a trained-looking last stage (it starts at zero)
        p.data.add_(0.01 * torch.randn_like(p))
    ck = {"format": "rclut-train-checkpoint", "version": CHECKPOINT_VERSION,
          "spec": src_spec.to_json(), "train_config": src_cfg.to_dict(),
          "model": source.state_dict(), "step": 7}
    torch.save(ck, tmp_path / "src.pt")
    spec = _spec([[("S", 0), ("D", 0)], [("S", 0), ("D", 0), ("Y", 0)], [("S", 0)]], scale=2)
    cfg = TrainConfig(nf=64, rc_channels=8, init_from=str(tmp_path / "src.pt"),
                      init_new_stage=2)
    model = build_model(spec, cfg)
    line = warm_start(model, cfg, tmp_path / "src.pt")
    assert "x4 -> x2" in line and "new stage 2" in line and "\n" not in line
    state, mix = model.state_dict(), subpixel_resampling(4, 2)
    for name, value in source.state_dict().items():
        renamed = name.replace("blocks.s2_", "blocks.s3_")
        if renamed.startswith("blocks.s3_") and ".conv6." in name:
            assert torch.allclose(state[renamed], mix @ value)
        else:
            assert torch.equal(state[renamed], value), name
    # the deeper network computes what the source's network resampled to x2 computes
    shallow = build_model(_spec([[("S", 0), ("D", 0)], [("S", 0)]], scale=2), cfg)
    warm_start(shallow, TrainConfig(nf=64, rc_channels=8), tmp_path / "src.pt")
    x = torch.randint(0, 256, (2, 1, 12, 12)).float() / 255.0
    with torch.no_grad():
        diff = (model(x) - shallow(x)).abs()
    assert diff.mean() < 0.05 and diff.max() <= 2

    # a layout that is not the source's plus one stage is refused in one line
    cfg_wrong = TrainConfig(nf=64, rc_channels=8, init_new_stage=1)
    with pytest.raises(TrainError, match="without its stage 1") as err:
        warm_start(build_model(spec, cfg_wrong), cfg_wrong, tmp_path / "src.pt")
    assert "\n" not in str(err.value)
    # the config refuses a new last stage, and a new stage without init_from
    toml = ROOT / "training" / "configs" / "rclut_x3.toml"
    for extra, why in ((["init_new_stage=2"], "last stage"),
                       (["init_new_stage=1", "init_from=''"], "needs init_from")):
        with pytest.raises(ConfigError, match=why):
            load_config(toml, _overrides(extra))


def test_init_new_branches_start_as_copies_of_a_like_source_branch(tmp_path):
    """x4 [rc3-S, rc5-S] | [S] -> x3 [rc3-S, rc5-S, rc3-D, rc5-Y] | [S]: the source's branches
    are copied by label, the added ones from the source branch with their RC window."""
    from training.config import ConfigError, TrainConfig, load_config
    from training.train import CHECKPOINT_VERSION, TrainError, build_model, warm_start

    torch.manual_seed(0)
    src_spec = _spec([[("S", 3), ("S", 5)], [("S", 0)]], scale=4)
    src_cfg = TrainConfig(nf=8, rc_channels=4)
    source = build_model(src_spec, src_cfg)
    ck = {"format": "rclut-train-checkpoint", "version": CHECKPOINT_VERSION,
          "spec": src_spec.to_json(), "train_config": src_cfg.to_dict(),
          "model": source.state_dict(), "step": 3}
    torch.save(ck, tmp_path / "src.pt")
    spec = _spec([[("S", 3), ("S", 5), ("D", 3), ("Y", 5)], [("S", 0)]], scale=3)
    cfg = TrainConfig(nf=8, rc_channels=4, init_from=str(tmp_path / "src.pt"),
                      init_new_branches=True)
    model = build_model(spec, cfg)
    line = warm_start(model, cfg, tmp_path / "src.pt")
    assert "x4 -> x3" in line and "\n" not in line
    assert "new branch s1 rc3-D starts as a copy of rc3-S" in line
    assert "new branch s1 rc5-Y starts as a copy of rc5-S" in line
    state, src = model.state_dict(), source.state_dict()
    for target, origin in (("s1_b1", "s1_b1"), ("s1_b2", "s1_b2"), ("s1_b3", "s1_b1"),
                           ("s1_b4", "s1_b2")):
        names = [n for n in src if n.startswith(f"blocks.{origin}.")]
        assert names
        for name in names:
            assert torch.equal(state[name.replace(origin, target, 1)], src[name]), name
    # without the switch the new layout is refused, and so is a branch with no like source
    plain = TrainConfig(nf=8, rc_channels=4)
    with pytest.raises(TrainError, match="init_new_branches starts added branches"):
        warm_start(build_model(spec, plain), plain, tmp_path / "src.pt")
    unlike = _spec([[("S", 3), ("S", 7)], [("S", 0)]], scale=3)
    with pytest.raises(TrainError, match="no branch with RC window 7 and 4 input") as err:
        warm_start(build_model(unlike, cfg), cfg, tmp_path / "src.pt")
    assert "\n" not in str(err.value)
    toml = ROOT / "training" / "configs" / "rclut_x3.toml"
    for extra, why in ((["init_new_branches=true", "init_from=''"], "needs init_from"),
                       (["init_new_branches=true", "init_new_stage=1"], "cannot be combined")):
        with pytest.raises(ConfigError, match=why):
            load_config(toml, _overrides(extra))


def test_the_l1_loss_is_the_mean_absolute_error_of_the_same_first_batch(data_dir, cache_dir,
                                                                      tmp_path):
    """Same seed, same first batch and network: the first logged loss under ``loss = "l1"``
    lies strictly between the MSE and its root (errors on [0, 1] are below 1 in magnitude)."""
    cfg = ROOT / "training" / "configs" / "tiny.toml"
    first = {}
    for loss in ("mse", "l1"):
        run = tmp_path / loss
        train(cfg, [data_dir], run, steps=1, device="cpu", cache_dir=cache_dir, quiet=True,
              overrides=_overrides([f'loss="{loss}"']))
        first[loss] = _losses(run)[0]
    assert first["mse"] < first["l1"] <= first["mse"] ** 0.5


def test_an_unknown_loss_is_refused(tmp_path):
    from training.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="loss must be one of mse, l1, got 'huber'"):
        load_config(ROOT / "training" / "configs" / "tiny.toml", {"loss": "huber"})

"""training.pipeline: one config from images to a published, scored bundle; resumable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pipeline_configs import tiny_pipeline_config
from training.config import ConfigError
from training.pipeline import load_pipeline, progress_markdown, run_pipeline, run_seconds

ROOT = Path(__file__).resolve().parents[1]


def test_full_pipeline_then_rerun_skips_everything(tmp_path):
    cfg = tiny_pipeline_config(tmp_path)
    status = run_pipeline(cfg, say=lambda _s: None)
    assert status == {"train": "done", "transfer": "done", "ft1": "done", "ft2": "done",
                      "stamp": "done", "eval": "done", "results": "done"}
    res = tmp_path / "results"
    names = sorted(p.name for p in res.iterdir())
    assert names == ["config.toml", "finetune1_log.jsonl", "finetune2_log.jsonl",
                     "network_step6.pt", "results.md", "tiny_x4.npz", "train_log.jsonl"]
    from rclut_numba.bundle import load_bundle

    spec, _ = load_bundle(res / "tiny_x4.npz")
    assert spec.extra["training"]["steps"] == 6
    assert spec.extra["training"]["finetune_steps"] == 4
    assert "init_from" not in spec.extra["training"]  # a run from scratch
    for log in ("train_log.jsonl", "finetune1_log.jsonl", "finetune2_log.jsonl"):
        timed = [json.loads(x) for x in (res / log).read_text().splitlines() if "s_per_step" in x]
        assert timed and all(r["threads"] == 1 for r in timed), log  # the config's threads = 1
    md = (res / "results.md").read_text()
    assert "network steps: 6 / 6" in md and "PSNR" in md
    scores = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert list(scores) == ["bench", "flat_field"] and scores["bench"]["psnr"] > 0
    assert 0 <= scores["flat_field"]["max"] <= 255 and "Flat field: flat grey moves" in md
    again = run_pipeline(cfg, say=lambda _s: None)
    assert {k: v for k, v in again.items() if k != "results"} == {
        k: "skipped" for k in ("train", "transfer", "ft1", "ft2", "stamp", "eval")}


def test_an_eight_orientation_model_goes_through_the_pipeline_to_an_exact_bundle(tmp_path):
    """Trained, transferred and fine-tuned with eight orientations: the bundle says so, and the
    engine reproduces the torch LUT forward the legs trained through."""
    import numpy as np

    from rclut_numba.bundle import load_bundle
    from rclut_numba.engine import LutModel
    from training.lut_forward import LutForward

    cfg = tiny_pipeline_config(tmp_path, legs=1, model="orientations = 8")
    assert run_pipeline(cfg, say=lambda _s: None)["results"] == "done"
    spec, arrays = load_bundle(tmp_path / "results" / "tiny_x4.npz")
    assert spec.orientations == 8 and "8 orientations" in spec.describe()
    image = np.random.default_rng(0).integers(0, 256, (13, 9), dtype=np.uint8)
    with torch.no_grad():
        y = LutForward(spec, arrays)(torch.from_numpy(image.astype(np.float32))[None, None])
    assert np.array_equal(LutModel(spec, arrays).upscale(image), y[0, 0].numpy().astype(np.uint8))


def test_a_leg_added_to_a_finished_pipeline_is_run_then_stamped_and_scored_again(tmp_path):
    from rclut_numba.bundle import load_bundle

    cfg = tiny_pipeline_config(tmp_path, legs=1)
    run_pipeline(cfg, say=lambda _s: None)
    cfg.write_text(cfg.read_text() + "\n[[finetune.legs]]\nsteps = 3\nlr = 0.01\n"
                   "lr_min = 0.001\nbatch_size = 2\ncrop = 12\nval_every = 0\n")
    status = run_pipeline(cfg, say=lambda _s: None)
    assert status["ft1"] == "skipped"
    assert status["ft2"] == status["stamp"] == status["eval"] == "done"
    spec, _ = load_bundle(tmp_path / "results" / "tiny_x4.npz")
    assert spec.extra["training"]["finetune_steps"] == 2 + 3


def test_stopped_pipeline_continues_where_it_stopped(tmp_path):
    cfg = tiny_pipeline_config(tmp_path)
    assert run_pipeline(cfg, until="ft1", say=lambda _s: None)["ft1"] == "done"
    assert not (tmp_path / "run" / "ft2.npz").exists()
    md = (tmp_path / "results" / "results.md").read_text()
    assert "network steps: 6 / 6" in md  # refreshed while training (report_every = 4)
    status = run_pipeline(cfg, say=lambda _s: None)
    assert status["train"] == status["transfer"] == status["ft1"] == "skipped"
    assert status["ft2"] == "done"


def _branch_of_a_longer_run(tmp_path, at: int) -> Path:
    """A 6-step one-leg pipeline config whose run folder starts as a copy of a 10-step run's
    checkpoint and log at step ``at``."""
    from training.train import train

    cfg = tiny_pipeline_config(tmp_path, legs=1)
    long_cfg = tmp_path / "long.toml"
    long_cfg.write_text(cfg.read_text().replace("steps = 6\n", "steps = 10\n", 1))
    train(long_cfg, [tmp_path / "images"], tmp_path / "long_run", stop_after=at, quiet=True)
    (tmp_path / "run").mkdir()
    for name in ("last.pt", "log.jsonl"):
        (tmp_path / "run" / name).write_bytes((tmp_path / "long_run" / name).read_bytes())
    return cfg


def test_snapshot_of_a_longer_run_keeps_its_schedule(tmp_path):
    # a config whose [train] steps is a step of a longer run's schedule: the copied checkpoint
    # is not trained further, and the stamp records the run's own schedule
    from rclut_numba.bundle import load_bundle

    cfg = _branch_of_a_longer_run(tmp_path, at=6)
    status = run_pipeline(cfg, say=lambda _s: None)
    assert status["train"] == "skipped" and status["stamp"] == "done"
    training = load_bundle(tmp_path / "results" / "tiny_x4.npz")[0].extra["training"]
    assert training["steps"] == 6 and training["schedule_steps"] == 10
    md = (tmp_path / "results" / "results.md").read_text()
    assert "network steps: 6 / 6 of a 10-step schedule" in md


def test_bad_pipeline_tables_are_refused(tmp_path):
    cfg = tiny_pipeline_config(tmp_path, extra="bogus = 1")
    with pytest.raises(ConfigError, match="unknown key.*bogus"):
        load_pipeline(cfg)
    cfg = tiny_pipeline_config(tmp_path, extra='spread_rc = "yes"')
    with pytest.raises(ConfigError, match="spread_rc must be bool"):
        load_pipeline(cfg)
    text = cfg.read_text().replace('spread_rc = "yes"', "").replace("steps = 2\n", "steps = 0\n")
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="legs.*#1"):
        load_pipeline(cfg)
    cfg.write_text(text.replace("steps = 0\n", "steps = 2\nflat_weight = -1\n"))
    with pytest.raises(ConfigError, match="#1: flat_weight must be"):
        load_pipeline(cfg)
    ok = text.replace("steps = 0\n", "steps = 2\n")
    cfg.write_text(ok.replace("[train]", "[train]\nflat_share = 1.5"))
    with pytest.raises(ConfigError, match="flat_share must be in"):
        load_pipeline(cfg)
    cfg.write_text(ok.replace("[pipeline]", "[pipeline]\ndata_shares = [1, 2]"))
    with pytest.raises(ConfigError, match="2 data share.*1 data entry"):
        load_pipeline(cfg)
    cfg.write_text(ok.replace("[train]", "[train]\ncooldown_start = 2\ncooldown_steps = 2"))
    with pytest.raises(ConfigError, match="cooldown_start \\+ cooldown_steps must equal steps"):
        load_pipeline(cfg)


def _run_with_log(tmp_path, records) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_each_part_of_a_run_is_charged_its_own_speed(tmp_path):
    # 1000 steps at 4 s, then (resumed faster) 1000 at 2 s, logged every 10 steps, with a
    # validation record and a 3-record burst of contention in each part
    recs = []
    for k in range(1, 201):
        speed = 4.0 if k <= 100 else 2.0
        if k in (40, 41, 42, 150, 151, 152):
            speed = 30.0
        recs.append({"step": 10 * k, "loss": 0.01, "lr": 1e-3, "s_per_step": speed})
        if k % 25 == 0:
            recs.append({"step": 10 * k, "val_psnr": 29.0})
    steps, seconds, cpu_seconds = run_seconds(_run_with_log(tmp_path, recs), threads=2)
    assert steps == 2000
    assert seconds == pytest.approx(1000 * 4.0 + 1000 * 2.0, rel=0.02)
    assert cpu_seconds == pytest.approx(2 * seconds)  # records without threads: the fallback


def test_each_part_of_a_run_is_charged_its_own_threads(tmp_path):
    # 500 steps at 2 s on 2 threads, then 500 at 3 s on 1 thread; the fallback (4) never applies
    recs = [{"step": 10 * k, "loss": 0.01, "lr": 1e-3, "s_per_step": 2.0 if k <= 50 else 3.0,
             "threads": 2 if k <= 50 else 1} for k in range(1, 101)]
    steps, seconds, cpu_seconds = run_seconds(_run_with_log(tmp_path, recs), threads=4)
    assert steps == 1000
    assert seconds == pytest.approx(500 * 2.0 + 500 * 3.0, rel=0.05)
    assert cpu_seconds == pytest.approx(500 * 2.0 * 2 + 500 * 3.0 * 1, rel=0.05)


def test_progress_page_shows_curve_and_eta(tmp_path):
    cfg = tiny_pipeline_config(tmp_path)
    _, tc, pc = load_pipeline(cfg)
    run = pc.run_dir
    run.mkdir()
    recs = [{"step": 100, "loss": 0.01, "lr": 1e-3, "s_per_step": 2.0},
            {"step": 100, "val_psnr": 29.5, "val_ssim": 0.8,
             "val": {"Set5": {"psnr": 29.5, "ssim": 0.8}, "Set14": {"psnr": 26.5, "ssim": 0.7}}}]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    tc.steps = 1000
    md = progress_markdown(pc, tc, "train")
    assert "network steps: 100 / 1000" in md
    assert "ETA 0.5 h" in md
    assert "| 100 | 26.5000 | 29.5000 |" in md
    # a weight EMA adds its own columns; a run validated on one set shows a PSNR column
    def scores(set5, set14):
        return {"Set5": {"psnr": set5, "ssim": 0.8}, "Set14": {"psnr": set14, "ssim": 0.7}}

    recs.append({"step": 200, "val_psnr": 29.7, "val_ssim": 0.8, "val": scores(29.7, 26.6),
                 "ema": scores(29.9, 26.8)})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = progress_markdown(pc, tc, "train")
    assert "| step | Set14 | Set14 EMA | Set5 | Set5 EMA |" in md
    assert "| 100 | 26.5000 |  | 29.5000 |  |" in md
    assert "| 200 | 26.6000 | 26.8000 | 29.7000 | 29.9000 |" in md
    (run / "log.jsonl").write_text(json.dumps({"step": 50, "val_psnr": 28.0, "val_ssim": 0.7})
                                   + "\n")
    assert "| step | PSNR |\n|---:|---:|\n| 50 | 28.0000 |" in progress_markdown(pc, tc, "train")


def test_sigterm_during_training_reports_the_stopped_step(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from processes import wait_for_log_lines

    cfg = tiny_pipeline_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("steps = 6\n", "steps = 100000\n", 1)
                   .replace("report_every = 4", "report_every = 100000"))
    env = dict(os.environ, RCLUT_ALLOCATOR="system")
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "pipeline", str(cfg)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = tmp_path / "run" / "log.jsonl"
    wait_for_log_lines(log, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    step = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"]
    published = (tmp_path / "results" / "train_log.jsonl").read_text().splitlines()
    assert step >= 3 and max(json.loads(x)["step"] for x in published) == step
    assert "train (stopped)" in (tmp_path / "results" / "results.md").read_text()
    # of the checkpoints, only the stopped step's resume point leaves the run folder
    from training.train import load_checkpoint

    assert [p.name for p in (tmp_path / "results").glob("*.pt")] == ["resume_point.pt"]
    assert load_checkpoint(tmp_path / "results" / "resume_point.pt")["step"] == step


def test_cooldown_branch_of_a_longer_run_trains_to_its_end(tmp_path):
    # a branch from a longer run's step 4: the lr falls to 0 over steps 4..6, then the LUT stages
    cfg = _branch_of_a_longer_run(tmp_path, at=4)
    cfg.write_text(cfg.read_text().replace("[train]", "[train]\ncooldown_start = 4\n"
                                                      "cooldown_steps = 2"))
    status = run_pipeline(cfg, say=lambda _s: None)
    assert status["train"] == "done" and status["eval"] == "done"
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
           if "lr" in json.loads(x)]
    assert lrs[-1] == 0.0 and lrs[-2] > 0  # logged after each step: the next step's lr
    md = (tmp_path / "results" / "results.md").read_text()
    assert "network steps: 6 / 6 of a 10-step schedule" in md
    assert "from step 4 a linear cooldown to 0 over 2 steps" in md


def _network_state(run: Path) -> dict:
    from training.train import load_checkpoint

    ck = load_checkpoint(run / "last.pt")
    return {"step": ck["step"], "model": ck["model"], "optimizer": ck["optimizer"]["state"],
            "rng": ck["rng"]["torch"]}


def test_committed_resume_point_continues_like_the_run_in_place(tmp_path):
    """A session's share of a run (--stop-after), its run folder then lost (a new machine):
    the pipeline continues from results/<name>/resume_point.pt, step for step as an
    uninterrupted run."""
    import shutil

    whole = tiny_pipeline_config(tmp_path / "whole", legs=0)
    run_pipeline(whole, until="train", say=lambda _s: None)

    parts = tiny_pipeline_config(tmp_path / "parts", legs=0)
    status = run_pipeline(parts, stop_after=3, say=lambda _s: None)
    assert status == {"train": "stopped at step 3"}
    point = tmp_path / "parts" / "results" / "resume_point.pt"
    from training.train import load_checkpoint

    assert load_checkpoint(point)["step"] == 3 and point.read_bytes() == (
        tmp_path / "parts" / "run" / "last.pt").read_bytes()
    shutil.rmtree(tmp_path / "parts" / "run")  # only results/ travels, as in a fresh clone
    said = []
    run_pipeline(parts, until="train", say=said.append)
    assert any("continuing from the resume point" in line and "step 3" in line
               for line in said)

    a, b = _network_state(tmp_path / "whole" / "run"), _network_state(tmp_path / "parts" / "run")
    assert a["step"] == b["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid in a["optimizer"]:
        for name, value in a["optimizer"][pid].items():
            assert torch.equal(value, b["optimizer"][pid][name]), (pid, name)
    assert torch.equal(a["rng"], b["rng"])
    steps = [json.loads(line)["step"]
             for line in (tmp_path / "parts" / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the restored log goes on where the point was taken


def test_finished_run_publishes_no_resume_point(tmp_path):
    cfg = tiny_pipeline_config(tmp_path, legs=0)
    run_pipeline(cfg, stop_after=4, say=lambda _s: None)
    assert (tmp_path / "results" / "resume_point.pt").is_file()
    run_pipeline(cfg, say=lambda _s: None)
    assert not (tmp_path / "results" / "resume_point.pt").exists()
    assert (tmp_path / "results" / "network_step6.pt").is_file()


def test_a_broken_resume_point_is_refused_with_its_name(tmp_path):
    cfg = tiny_pipeline_config(tmp_path, legs=0)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "resume_point.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="resume_point.pt"):
        run_pipeline(cfg, say=lambda _s: None)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_stop_after_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="--stop-after"):
        run_pipeline(tiny_pipeline_config(tmp_path, legs=0), stop_after=0, say=lambda _s: None)

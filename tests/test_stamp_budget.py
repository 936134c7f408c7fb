"""scripts/stamp_budget.py: the training budget read from a run's log."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stamp_budget():
    path = ROOT / "scripts" / "stamp_budget.py"
    spec = importlib.util.spec_from_file_location("stamp_budget", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(run: Path, records):
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_each_part_of_a_run_is_charged_its_own_speed(stamp_budget, tmp_path):
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
    write_log(tmp_path / "run", recs)
    steps, seconds = stamp_budget.run_seconds(tmp_path / "run")
    assert steps == 2000
    # only the records within 10 of the switch see both speeds; the bursts are outvoted
    assert seconds == pytest.approx(1000 * 4.0 + 1000 * 2.0, rel=0.02)


def test_a_log_without_timed_steps_is_an_error(stamp_budget, tmp_path):
    write_log(tmp_path / "run", [{"step": 250, "val_psnr": 29.0}])
    with pytest.raises(stamp_budget.BundleError, match="no timed steps"):
        stamp_budget.run_seconds(tmp_path / "run")


def test_the_schedule_comes_from_the_last_checkpoint(stamp_budget, tmp_path):
    torch = pytest.importorskip("torch")
    run = tmp_path / "run"
    write_log(run, [{"step": 10, "loss": 0.01, "lr": 1e-3, "s_per_step": 1.0}])
    (run / "config.toml").write_text('[train]\nsteps = 1100\nbatch_size = 32\n')
    assert stamp_budget.final_train_config(run)["steps"] == 1100  # no checkpoint yet
    # resumed with --steps 3800: config.toml still says 1100, the checkpoint knows better
    torch.save({"train_config": {"steps": 3800, "batch_size": 32}, "step": 10}, run / "last.pt")
    assert stamp_budget.final_train_config(run)["steps"] == 3800


def test_the_stamp_names_the_commands_folder(stamp_budget, tmp_path, monkeypatch):
    from rclut_numba.bundle import load_bundle, save_bundle
    from rclut_numba.spec import ModelSpec, srlut
    from strategies import random_arrays

    s = srlut()
    spec = ModelSpec(s.name, 2, s.stages, interval=64)
    save_bundle(tmp_path / "m.npz", spec, random_arrays(spec, 0))
    write_log(tmp_path / "net", [{"step": 10, "loss": 0.01, "lr": 1e-3, "s_per_step": 2.0}])
    (tmp_path / "net" / "config.toml").write_text(
        "[train]\nsteps = 10\nbatch_size = 4\ncrop = 16\nnf = 8\n")
    # two fine-tuning legs, as finetune_20000.cmd runs them: their steps and hours add up
    write_log(tmp_path / "ft", [{"step": 1800, "loss": 0.01, "lr": 0.1, "s_per_step": 1.0}])
    write_log(tmp_path / "ft2", [{"step": 1800, "loss": 0.01, "lr": 0.03, "s_per_step": 1.0}])
    base = ["stamp_budget", str(tmp_path / "m.npz"), "--train", str(tmp_path / "net"),
            "--finetune", f"{tmp_path / 'ft'}@1", str(tmp_path / "ft2"), "--threads", "2"]
    # default: results/<output stem>/; --commands overrides it (a bundle named for its step)
    cases = [((), "rclut_x4.npz", "results/rclut_x4/"),
             (("--commands", "results/rclut_x4/"), "rclut_x4_20000.npz", "results/rclut_x4/")]
    for extra, out, expected in cases:
        monkeypatch.setattr("sys.argv", base + ["-o", str(tmp_path / out), *extra])
        assert stamp_budget.main() == 0
        training = load_bundle(tmp_path / out)[0].extra["training"]
        assert training["commands"] == expected
        assert (training["steps"], training["finetune_steps"]) == (10, 3600)
        assert training["finetune_wall_hours"] == 1.0
        assert training["finetune_cpu_hours"] == 1.5  # 0.5 h on 1 thread + 0.5 h on 2

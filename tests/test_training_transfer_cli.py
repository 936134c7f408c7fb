"""rclut-train transfer / finetune end to end on tiny runs, and their bad-input handling."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rclut_numba.analysis import flat_field_deviation
from rclut_numba.bundle import load_bundle, save_bundle
from rclut_numba.engine import LutModel
from rclut_numba.spec import ModelSpec
from strategies import random_arrays
from training.cli import main as cli_main
from training.config import parse_overrides
from training.data import synthetic_images
from training.finetune import finetune
from training.train import TrainError, train

TINY = ["nf=4", "rc_channels=3", "batch_size=2", "crop=12", "log_every=1", "val_every=0",
        "ckpt_every=2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    synthetic_images(d, n=3, size=64)
    return d


def test_transfer_a_tiny_rclut_run(tmp_path, images):
    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "rclut.toml"
    run = tmp_path / "run"
    train(config, [images], run, steps=2, device="cpu", overrides=parse_overrides(TINY), quiet=True)
    out = tmp_path / "m.npz"
    assert cli_main(["transfer", str(run), "-o", str(out)]) == 0
    spec, arrays = load_bundle(out)
    assert spec.name == "RC-LUT" and arrays["s1_b3_rc_table"].shape == (49, 256)
    members = zipfile.ZipFile(out).namelist()  # RC tables packed (rclut_numba.rc_storage)
    assert "s1_b3_rc_codes.npy" in members and not any(m.endswith("_rc_table.npy") for m in members)
    assert LutModel(spec, arrays).upscale(np.zeros((5, 7), np.uint8)).shape == (20, 28)
    assert cli_main(["transfer", str(run), "-o", str(out)]) == 2  # exists, no --force


def test_a_residual_run_stays_residual_through_transfer_and_finetuning(tmp_path, images):
    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "rclut.toml"
    lines = [x for x in config.read_text().splitlines() if not x.startswith("residual =")]
    text = "\n".join(lines).replace("[model]\n", "[model]\nresidual = true\n", 1)
    (tmp_path / "residual.toml").write_text(text)
    run = tmp_path / "run"
    train(tmp_path / "residual.toml", [images], run, steps=2, device="cpu",
          overrides=parse_overrides(TINY), quiet=True)
    assert cli_main(["transfer", str(run), "-o", str(tmp_path / "m.npz")]) == 0
    spec, _ = load_bundle(tmp_path / "m.npz")
    assert spec.residual
    finetune(tmp_path / "m.npz", [images], tmp_path / "ft.npz", run_dir=tmp_path / "ft",
             steps=1, batch_size=2, crop=12, val_every=0, log_every=1, quiet=True)
    assert load_bundle(tmp_path / "ft.npz")[0].residual


def small_bundle(tmp_path, stages=(("rc3-S", "D"), ("1", "S"))):
    spec = ModelSpec.from_dict({"name": "t", "scale": 2, "interval": 64,
                                "stages": [list(s) for s in stages]})
    path = tmp_path / "start.npz"
    arrays = random_arrays(spec, 0)
    arrays = {k: (v // 4 if k.endswith("_lut") else v) for k, v in arrays.items()}
    save_bundle(path, spec, arrays)
    return path


def test_finetune_resume_equals_uninterrupted(tmp_path, images):
    start = small_bundle(tmp_path)
    kw = dict(steps=4, batch_size=2, crop=12, val_every=0, log_every=1, ckpt_every=1, quiet=True,
              lr=1.0, lr_min=0.5)  # large steps, so entries cross a rounding boundary at once
    whole = finetune(start, [images], tmp_path / "a.npz", run_dir=tmp_path / "ra", **kw)
    part = finetune(start, [images], tmp_path / "b.npz", run_dir=tmp_path / "rb", stop_after=2,
                    **kw)
    assert not (tmp_path / "b.npz").exists()  # nothing written before the schedule completes
    rest = finetune(start, [images], tmp_path / "b.npz", run_dir=tmp_path / "rb", resume=True, **kw)
    assert part["losses"] + rest["losses"] == whole["losses"]
    _, a = load_bundle(tmp_path / "a.npz")
    _, b = load_bundle(tmp_path / "b.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    _, s = load_bundle(start)
    assert any(not np.array_equal(a[k], s[k]) for k in a)  # the tables did move
    logged = [json.loads(x) for x in (tmp_path / "rb" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]


def flat_error(bundle) -> float:
    shift = flat_field_deviation(LutModel(*load_bundle(bundle)))
    return float(np.square(shift.astype(float)).mean())


def test_finetune_flat_weight_pulls_flat_grey_back(tmp_path, images):
    start = small_bundle(tmp_path, stages=[("rc3-S", "1")])
    kw = dict(steps=6, batch_size=2, crop=12, val_every=0, log_every=1, quiet=True,
              lr=10.0, lr_min=5.0)  # random tables start far from flat-in, flat-out
    finetune(start, [images], tmp_path / "plain.npz", run_dir=tmp_path / "rp", **kw)
    finetune(start, [images], tmp_path / "flat.npz", run_dir=tmp_path / "rf", flat_weight=100.0,
             **kw)
    before = flat_error(start)
    assert flat_error(tmp_path / "flat.npz") < 0.5 * min(before, flat_error(tmp_path / "plain.npz"))
    logged = [json.loads(x) for x in (tmp_path / "rf" / "log.jsonl").read_text().splitlines()]
    assert logged[0]["flat_max"] == flat_field_deviation(LutModel(*load_bundle(start))).max()
    # a run is resumed only with the weight it was made with
    finetune(start, [images], tmp_path / "x.npz", run_dir=tmp_path / "rx", stop_after=2, **kw)
    with pytest.raises(TrainError, match="another model or schedule"):
        finetune(start, [images], tmp_path / "x.npz", run_dir=tmp_path / "rx", resume=True,
                 flat_weight=1.0, **kw)


def test_finetune_adam_eps_sets_the_step_size(tmp_path, images):
    start = small_bundle(tmp_path)
    kw = dict(steps=2, batch_size=2, crop=12, val_every=0, log_every=1, quiet=True,
              lr=2.0, lr_min=2.0)

    def tables(eps, name):
        finetune(start, [images], tmp_path / f"{name}.npz", run_dir=tmp_path / name,
                 adam_eps=eps, **kw)
        return load_bundle(tmp_path / f"{name}.npz")[1]

    # an eps far above the gradients freezes the tables (as exported: the RC tables are
    # projected on export); far below them, each step moves a touched entry by about lr
    frozen, still, normalised = tables(1e3, "a"), tables(1e6, "b"), tables(1e-12, "c")
    assert all(np.array_equal(frozen[k], still[k]) for k in frozen)
    assert any(not np.array_equal(frozen[k], normalised[k]) for k in frozen)
    with pytest.raises(TrainError, match="adam_eps must be"):
        finetune(start, [images], tmp_path / "x.npz", run_dir=tmp_path / "rx", adam_eps=0.0, **kw)


@pytest.mark.parametrize("args, msg", [
    (["transfer", "/no/run", "-o", "OUT/x.npz"], "does not exist"),
    (["finetune", "/no/model.npz", "--data", "IMG", "-o", "OUT/x.npz"], "no such model"),
    (["finetune", "START", "--data", "IMG", "-o", "/no/dir/x.npz"], "does not exist"),
    (["finetune", "START", "--data", "IMG", "-o", "START"], "exists"),
    (["finetune", "START", "--data", "IMG", "-o", "OUT/x.npz", "--adam-eps", "-1"],
     "adam_eps must be"),
    (["finetune", "START", "--data", "IMG", "IMG", "--data-shares", "1", "-o", "OUT/x.npz"],
     "1 data share(s) for 2 data entries"),
])
def test_bad_input_one_line(tmp_path, images, capsys, args, msg):
    start = small_bundle(tmp_path)
    names = {"OUT": str(tmp_path), "IMG": str(images), "START": str(start)}
    for key, value in names.items():
        args = [a.replace(key, value) for a in args]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


def _training_imports() -> dict[str, set[str]]:
    """``{module: modules of training/ it imports}``, lazy imports inside functions included."""
    import ast

    root = Path(__file__).resolve().parents[1] / "training"
    graph = {}
    for path in root.glob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                edges.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training."):
                edges.add(node.module.split(".")[1])
        graph[path.stem] = edges
    return graph


def test_training_modules_import_no_circle():
    graph = _training_imports()
    assert "pipeline" in graph["cli"] and "train" in graph["pipeline"]  # lazy imports are read
    done, path = set(), []

    def visit(mod):
        assert mod not in path, "import circle: " + " -> ".join(path[path.index(mod):] + [mod])
        if mod in done:
            return
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            visit(dep)
        path.pop()
        done.add(mod)

    for mod in sorted(graph):
        visit(mod)


def test_the_cli_still_offers_write_transferred_bundle():
    """Pipelines started before it moved to training.transfer import it from training.cli."""
    from training.cli import write_transferred_bundle
    from training.transfer import write_transferred_bundle as moved

    assert write_transferred_bundle is moved


def test_scoring_tables_keeps_torchs_thread_count(tmp_path):
    """numba's OpenMP layer would leave torch on numba's thread count after the engine scored
    tables (finetune's validation); a fresh process, so that numba starts its pool here."""
    import os
    import subprocess
    import sys

    synthetic_images(tmp_path / "val" / "HR", n=1, size=48)
    script = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from rclut_numba.engine import embedded_model_path, load_model\n"
        "from training.finetune import engine_psnr\n"
        "from training.pipeline import evaluate_bundle\n"
        "m = load_model(scale=2)\n"
        f"engine_psnr(m.spec, m.arrays, {str(tmp_path / 'val')!r})\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
        f"evaluate_bundle(embedded_model_path(2), [{str(tmp_path / 'val')!r}], say=print)\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]

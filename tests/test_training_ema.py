"""training.ema: the weight EMA against a step-by-step average, exact resume, validation,
and the CLI / pipeline ways to use it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.cli import main as cli_main
from training.config import ConfigError, parse_overrides
from training.data import synthetic_images
from training.ema import WeightEMA
from training.train import TrainError, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny.toml"
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "train" / "T91"
SMALL = ["batch_size=2", "crop=12", "log_every=1", "val_every=0", "ckpt_every=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ema_images")
    real = sorted(SHARED_TRAIN.glob("*.png"))[:2] if SHARED_TRAIN.is_dir() else []
    for p in real:
        shutil.copy(p, d / p.name)
    if not real:
        synthetic_images(d, n=2, size=96)
    return d


def _train(data_dir, run, *extra, **kw):
    kw.setdefault("steps", 5)
    return train(TINY, [data_dir], run, device="cpu", cache_dir=run.parent / "cache",
                 overrides=parse_overrides(SMALL + list(extra)), quiet=True, **kw)


def _ck(run):
    return torch.load(run / "last.pt", weights_only=False)


def test_update_is_the_recursive_average_and_swapping_restores_the_weights():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    ema = WeightEMA(layer, 0.75)
    expected = {k: v.detach().double().clone() for k, v in layer.state_dict().items()}
    for _ in range(4):
        with torch.no_grad():  # in place, as an optimizer step is
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        for k, v in layer.state_dict().items():
            expected[k] = 0.75 * expected[k] + 0.25 * v.double()
    for k, v in ema.state_dict().items():
        assert torch.allclose(v.double(), expected[k], rtol=0, atol=1e-6), k
    live = {k: v.clone() for k, v in layer.state_dict().items()}
    with ema.swapped_in():
        for k, v in layer.state_dict().items():
            assert torch.equal(v, ema.state_dict()[k])
    for k, v in layer.state_dict().items():
        assert torch.equal(v, live[k])  # bit for bit
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        WeightEMA(layer, 1.0)
    with pytest.raises(ValueError, match="lacks 1 of the model's tensors, e.g. bias"):
        WeightEMA(layer, 0.5, {"weight": layer.weight})


def test_training_keeps_the_average_of_the_weights_after_every_step(data_dir, tmp_path,
                                                                    monkeypatch):
    weights = []  # float64 copies: before the first optimizer step, then after each one
    adam_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        params = self.param_groups[0]["params"]
        if not weights:
            weights.append([p.detach().double().clone() for p in params])
        out = adam_step(self, *args, **kwargs)
        weights.append([p.detach().double().clone() for p in params])
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    run = tmp_path / "run"
    _train(data_dir, run, "ema_decay=0.6", steps=4)
    ck = _ck(run)
    from training.train import model_from_checkpoint
    names = [n for n, _ in model_from_checkpoint(ck).named_parameters()]
    avg = weights[0]
    for w in weights[1:]:
        avg = [0.6 * a + 0.4 * b for a, b in zip(avg, w, strict=True)]
    assert len(weights) == 5
    for name, a in zip(names, avg, strict=True):
        assert torch.allclose(ck["ema"][name].double(), a, rtol=0, atol=1e-6), name
    assert not all(torch.equal(ck["ema"][n], ck["model"][n]) for n in names)


def test_resume_reproduces_the_average_exactly(data_dir, tmp_path):
    full = tmp_path / "full"
    _train(data_dir, full, "ema_decay=0.9")
    part = tmp_path / "part"
    _train(data_dir, part, "ema_decay=0.9", stop_after=3)
    _train(data_dir, part, "ema_decay=0.9", resume=True, steps=None)
    a, b = _ck(full), _ck(part)
    assert b["step"] == 5
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_an_average_turned_on_at_a_resume_starts_from_the_weights_there(data_dir, tmp_path):
    run = tmp_path / "run"
    _train(data_dir, run, stop_after=2)
    assert "ema" not in _ck(run)
    at2 = _ck(run)["model"]
    _train(data_dir, run, "ema_decay=0.9", resume=True, steps=None, stop_after=3)
    ck = _ck(run)
    for k, v in ck["ema"].items():
        assert torch.allclose(v, 0.9 * at2[k] + 0.1 * ck["model"][k], rtol=0, atol=1e-6), k


def test_validation_scores_both_and_the_cli_uses_the_average(data_dir, tmp_path, capsys):
    val = tmp_path / "val"
    synthetic_images(val / "HR", n=2, size=48, seed=3)
    run = tmp_path / "run"
    _train(data_dir, run, "ema_decay=0.5", "val_every=2", steps=4, val_data=str(val))
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    vals = [r for r in recs if "val_psnr" in r]
    assert [r["step"] for r in vals] == [2, 4]
    assert all(set(r["ema"]) == {"val"} and r["ema"]["val"]["psnr"] > 0 for r in vals)

    def eval_psnr(*flags):
        capsys.readouterr()
        assert cli_main(["eval-network", "--weights", str(run / "last.pt"), "--data", str(val),
                         *flags]) == 0
        return float(capsys.readouterr().out.strip().splitlines()[-1].split()[2])

    # eval-network prints 4 decimals, the log keeps them all
    assert eval_psnr("--ema") == pytest.approx(vals[-1]["ema"]["val"]["psnr"], abs=1e-4)
    assert eval_psnr() == pytest.approx(vals[-1]["val_psnr"], abs=1e-4)
    bundle = tmp_path / "ema.npz"
    assert cli_main(["transfer", str(run / "last.pt"), "-o", str(bundle), "--ema"]) == 0
    from rclut_numba.bundle import load_bundle
    assert load_bundle(bundle)[0].extra["weights"] == "ema"


def test_a_checkpoint_without_an_average_is_refused_in_one_line(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _train(data_dir, run, steps=2)
    val = tmp_path / "val"
    (val / "HR").mkdir(parents=True)  # a dataset folder: the refusal is the EMA's
    for argv in (["eval-network", "--weights", str(run / "last.pt"), "--data", str(val), "--ema"],
                 ["transfer", str(run / "last.pt"), "-o", str(tmp_path / "x.npz"), "--ema"]):
        capsys.readouterr()
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("rclut-train: error: ") and err.count("\n") == 1, err
        assert "holds no EMA weights" in err
    assert not (tmp_path / "x.npz").exists()


def test_bad_ema_settings_are_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="ema_decay must be in \\[0, 1\\)"):
        _train(data_dir, tmp_path / "r", "ema_decay=1.0")
    run = tmp_path / "run"
    _train(data_dir, run, "ema_decay=0.5", steps=2, stop_after=1)
    ck = _ck(run)
    del ck["ema"][next(iter(ck["ema"]))]
    torch.save(ck, run / "last.pt")
    with pytest.raises(TrainError, match="last.pt: the EMA state lacks 1"):
        _train(data_dir, run, "ema_decay=0.5", resume=True, steps=None)


def test_the_pipeline_transfers_the_average_only_when_there_is_one(tmp_path):
    from pipeline_configs import tiny_pipeline_config
    from training.pipeline import load_pipeline

    cfg = tiny_pipeline_config(tmp_path, extra='transfer_weights = "ema"')
    with pytest.raises(ConfigError, match="needs \\[train\\] ema_decay > 0"):
        load_pipeline(cfg)
    cfg.write_text(cfg.read_text().replace("[train]", "[train]\nema_decay = 0.9"))
    assert load_pipeline(cfg)[2].transfer_weights == "ema"
    cfg.write_text(cfg.read_text().replace('"ema"', '"average"'))
    with pytest.raises(ConfigError, match="transfer_weights must be"):
        load_pipeline(cfg)

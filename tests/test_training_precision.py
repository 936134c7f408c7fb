"""precision = "auto": the decision per machine (probes injected), an explicit precision wins,
an AVX2-only CPU gets float32, and a run resumes under another precision than it started in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.config import TrainConfig, parse_overrides
from training.data import synthetic_images
from training.precision import CpuBf16Probe, choose_precision, probe_cpu, resolve_precision
from training.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["nf=4", "rc_channels=3", "batch_size=2", "crop=12", "log_every=1", "val_every=0",
        "ckpt_every=2"]

EPYC_AVX512_BF16 = CpuBf16Probe("x86_64", "AVX512", mkldnn_bf16=True, native_bf16=True)
XEON_AMX = CpuBf16Probe("x86_64", "AVX512", mkldnn_bf16=True, native_bf16=True)
SKYLAKE_AVX512 = CpuBf16Probe("x86_64", "AVX512", mkldnn_bf16=True, native_bf16=False)
EPYC_AVX2 = CpuBf16Probe("x86_64", "AVX2", mkldnn_bf16=False, native_bf16=False)
GRAVITON3 = CpuBf16Probe("aarch64", "SVE256", mkldnn_bf16=True, native_bf16=False)


@pytest.mark.parametrize(("probe", "expected"), [
    (EPYC_AVX512_BF16, "bf16"),
    (XEON_AMX, "bf16"),
    (SKYLAKE_AVX512, "float32"),   # oneDNN would emulate bf16 with AVX-512 float32
    (EPYC_AVX2, "float32"),
    (GRAVITON3, "float32"),        # aarch64: float32 unless measured otherwise
    # a bf16 CPU made to act as an AVX2 one (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
    (CpuBf16Probe("x86_64", "AVX2", False, True, "AVX2"), "float32"),
    # ATen's capability cut to AVX2 alone, or oneDNN's ISA capped below its bf16 instructions
    (CpuBf16Probe("x86_64", "AVX2", True, True), "float32"),
    (CpuBf16Probe("x86_64", "AVX512", True, True, "AVX512_CORE"), "float32"),
    (CpuBf16Probe("x86_64", "AVX512", True, True, "AVX512_CORE_BF16"), "bf16"),
    (CpuBf16Probe("x86_64", "AVX512", True, True, "avx512_core_amx"), "bf16"),
    (CpuBf16Probe("x86_64", "AVX512", True, True, "ALL"), "bf16"),
], ids=["avx512-bf16", "amx", "avx512-no-bf16", "avx2", "aarch64", "avx2-emulated-by-env",
        "aten-avx2", "onednn-avx512-core", "onednn-bf16", "onednn-amx", "onednn-all"])
def test_auto_on_a_cpu(probe, expected):
    precision, why = choose_precision("cpu", probe)
    assert precision == expected
    assert probe.capability in why  # the reason names what torch reported


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "bf16"), ((8, 0), "bf16"),
                                                      ((7, 5), "float32"), (None, "float32")])
def test_auto_on_cuda(capability, expected):
    assert choose_precision("cuda", cuda_capability=capability)[0] == expected


def test_auto_elsewhere_is_float32_and_a_cpu_needs_its_probe():
    assert choose_precision("mps")[0] == "float32"
    with pytest.raises(ValueError, match="probe"):
        choose_precision("cpu")


@pytest.mark.parametrize("explicit", ["float32", "bf16", "bf16-autocast"])
def test_an_explicit_precision_wins(explicit):
    assert resolve_precision(explicit, "cpu") == (explicit, "set in the config")


def test_auto_on_this_machine_follows_its_probes():
    assert resolve_precision("auto", "cpu") == choose_precision("cpu", probe_cpu())


def test_auto_is_the_default_of_every_shipped_config():
    assert TrainConfig().precision == "auto"
    for path in sorted((ROOT / "training" / "configs").glob("*.toml")):
        table = tomllib.loads(path.read_text()).get("train", {})
        assert table.get("precision", "auto") == "auto", path.name


def test_an_avx2_only_cpu_gets_float32():
    """Any machine plays an AVX2-only CPU under these variables (torch reads them at start)."""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    code = ("from training.precision import probe_cpu, resolve_precision; "
            "print(probe_cpu().capability, resolve_precision('auto', 'cpu')[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["AVX2", "float32"]


def test_a_run_resumes_under_another_precision(tmp_path, capsys):
    """Started in float32, continued in bf16 (as on a machine where "auto" resolves so): the
    log and checkpoint say which steps ran in which, and the resumed run still learns."""
    synthetic_images(tmp_path / "img", n=2, size=64)
    cfg = ROOT / "training" / "configs" / "rclut.toml"
    run = tmp_path / "run"
    common = {"device": "cpu", "cache_dir": tmp_path / "cache", "threads": 1}
    train(cfg, [tmp_path / "img"], run, steps=4, stop_after=2, quiet=True,
          overrides=parse_overrides([*TINY, "precision=float32"]), **common)
    assert torch.load(run / "last.pt", weights_only=False)["precision"] == "float32"
    capsys.readouterr()
    losses = train(cfg, [tmp_path / "img"], run, resume=True,
                   overrides=parse_overrides([*TINY, "precision=bf16"]), **common)
    out = capsys.readouterr().out
    assert "precision: bf16 (set in the config); its steps so far ran in float32" in out
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] == 4 and ck["precision"] == "bf16"
    assert ck["train_config"]["precision"] == "bf16"  # what was asked; "auto" stays "auto"
    logged = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["precision"]) for r in logged if "loss" in r] == [
        (1, "float32"), (2, "float32"), (3, "bf16"), (4, "bf16")]


def test_the_pipeline_reports_the_precisions_a_run_ran_in(tmp_path):
    from training.pipeline import run_precision

    run = tmp_path / "run"
    run.mkdir()
    assert run_precision(run, TrainConfig()) == "auto"  # nothing logged yet
    recs = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0, "precision": "float32"},
            {"step": 3, "val_psnr": 20.0}, {"step": 4, "loss": 1.0, "precision": "bf16"},
            {"step": 5, "loss": 1.0, "precision": "bf16"}]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert run_precision(run, TrainConfig()) == "float32, bf16"

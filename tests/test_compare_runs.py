"""scripts/compare_runs.py: an A/B table of validation curves from run logs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the log format's reader lives in training.train

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)  # scripts/ is not a package: load by path
_spec.loader.exec_module(compare_runs)


def _log(folder: Path, records) -> Path:
    folder.mkdir()
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                      + "{cut by a cra")  # a line cut by a crash is skipped
    return folder


def test_runs_side_by_side_with_ema_columns_and_blanks_where_a_run_has_not_reached(tmp_path,
                                                                                   capsys):
    def val(step, psnr, ema=None):
        r = {"step": step, "val_psnr": psnr, "val_ssim": 0.8,
             "val": {"Set5": {"psnr": psnr, "ssim": 0.8}}}
        if ema is not None:
            r["ema"] = {"Set5": {"psnr": ema, "ssim": 0.8}}
        return r

    a = _log(tmp_path / "a", [{"step": 100, "loss": 0.1, "s_per_step": 2.0}, val(500, 30.1),
                              val(1000, 30.2), val(1250, 30.25)])
    b = _log(tmp_path / "b", [{"step": 100, "loss": 0.1, "s_per_step": 1.5},
                              val(500, 30.0, ema=30.3)])
    assert compare_runs.main([f"A={a}", f"B={b}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| step | A Set5 | A Set5 EMA | B Set5 | B Set5 EMA |"
    assert out[2] == "| 500 | 30.1000 |  | 30.0000 | 30.3000 |"
    assert out[3] == "| 1000 | 30.2000 |  |  |  |"  # 1250 is not a multiple of --every
    assert out[5] == "A: 1250 steps, median 2.00 s/step; B: 500 steps, median 1.50 s/step"
    assert compare_runs.main([f"{a}"]) == 2
    assert "expected LABEL=RUN" in capsys.readouterr().err

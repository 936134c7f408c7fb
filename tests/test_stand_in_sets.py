"""scripts/stand_in_sets.py: the held-out stand-ins are scikit-image's images, cropped, no alpha."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")

from rclut_numba.imaging import read_image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stand_in_sets",
                                               ROOT / "scripts" / "stand_in_sets.py")
stand_in_sets = importlib.util.module_from_spec(_spec)  # scripts/ is not a package
_spec.loader.exec_module(stand_in_sets)


def test_the_sets_are_top_left_crops_to_a_multiple_of_12_without_alpha(tmp_path, capsys):
    assert stand_in_sets.main([str(tmp_path)]) == 0
    src = stand_in_sets.skimage_data_folder()
    for name, stems in stand_in_sets.SETS.items():
        files = sorted((tmp_path / name / "HR").iterdir())
        assert [f.stem for f in files] == sorted(stems)
        for f in files:
            out = read_image(f)
            orig = read_image(next(p for p in (src / f"{f.stem}.png", src / f"{f.stem}.jpg")
                                   if p.is_file()))
            h, w = out.shape[:2]
            assert h % 12 == 0 and w % 12 == 0
            assert 0 <= orig.shape[0] - h < 12 and 0 <= orig.shape[1] - w < 12
            assert out.ndim == 2 or out.shape[2] == 3
            assert np.array_equal(out, orig[:h, :w, :3] if orig.ndim == 3 else orig[:h, :w])
    capsys.readouterr()
    assert stand_in_sets.main([str(tmp_path)]) == 2  # never overwrites without --force
    err = capsys.readouterr().err
    assert err.startswith("stand_in_sets: error: ") and "--force" in err
    assert err.count("\n") == 1
    assert stand_in_sets.main([str(tmp_path), "--force"]) == 0

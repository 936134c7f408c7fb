"""Dataset pairs and the evaluation loop, on small synthetic folders and on ../shared."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from rclut_numba.bicubic import downscale, upscale
from rclut_numba.evaluation import PSNR_CAP, DatasetError, dataset_pairs, evaluate
from rclut_numba.imaging import write_image
from rclut_numba.metrics import score

SHARED = Path(__file__).resolve().parents[2] / "shared"
RNG = np.random.default_rng(0)


@pytest.fixture
def dataset(tmp_path):
    hr = tmp_path / "HR"
    lr = tmp_path / "LR_bicubic" / "X4"
    hr.mkdir()
    lr.mkdir(parents=True)
    images = {
        "b_rgb": RNG.integers(0, 256, size=(32, 40, 3), dtype=np.uint8),
        "a_gray": RNG.integers(0, 256, size=(34, 27), dtype=np.uint8),  # not a multiple of 4
        "c_given": RNG.integers(0, 256, size=(24, 24, 3), dtype=np.uint8),
    }
    for name, img in images.items():
        write_image(hr / f"{name}.png", img)
    given_lr = RNG.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    write_image(lr / "c_given.png", given_lr)
    (hr / "notes.txt").write_text("not an image")
    return tmp_path, images, given_lr


def test_pairs_sorted_cropped_and_generated(dataset):
    root, images, given_lr = dataset
    pairs = list(dataset_pairs(root, 4))
    assert [p[0] for p in pairs] == ["a_gray", "b_rgb", "c_given"]
    name, lr, hr = pairs[0]
    assert hr.shape == (32, 24)  # cropped to multiples of 4, top-left kept
    np.testing.assert_array_equal(hr, images["a_gray"][:32, :24])
    np.testing.assert_array_equal(lr, downscale(hr, 4))
    _, lr, hr = pairs[1]
    assert lr.shape == (8, 10, 3) and lr.dtype == np.uint8
    _, lr, hr = pairs[2]
    np.testing.assert_array_equal(lr, given_lr)  # read from LR_bicubic/X4, not recomputed


def test_pairs_errors(tmp_path, dataset):
    with pytest.raises(DatasetError, match="no HR/ folder") as e:
        next(dataset_pairs(tmp_path / "nothing", 4))
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty"
    (empty / "HR").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        next(dataset_pairs(empty, 4))

    root, _, _ = dataset
    write_image(root / "LR_bicubic" / "X4" / "b_rgb.png", np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(DatasetError, match="does not match") as e:
        list(dataset_pairs(root, 4))
    assert "b_rgb.png" in str(e.value) and "\n" not in str(e.value)
    write_image(root / "LR_bicubic" / "X4" / "b_rgb.png", np.zeros((8, 10), np.uint8), force=True)
    with pytest.raises(DatasetError, match="channel"):
        list(dataset_pairs(root, 4))
    assert issubclass(DatasetError, ValueError)


def test_evaluate_prints_and_averages(dataset):
    root, _, _ = dataset
    lines = []
    result = evaluate(lambda lr: upscale(lr, 4), root, 4, out=lines.append)
    assert len(lines) == 4
    for line, row in zip(lines[:3], result["rows"], strict=True):
        assert re.fullmatch(rf"{row['name']}  PSNR \d+\.\d{{4}}  SSIM -?\d\.\d{{4}}", line)
    assert result["mean_psnr"] == pytest.approx(np.mean([r["psnr"] for r in result["rows"]]))
    assert result["mean_ssim"] == pytest.approx(np.mean([r["ssim"] for r in result["rows"]]))
    assert lines[-1] == f"mean PSNR {result['mean_psnr']:.4f} SSIM {result['mean_ssim']:.4f}"
    # each row is the protocol score of that image
    name, lr, hr = next(dataset_pairs(root, 4))
    p, s = score(upscale(lr, 4), hr, 4)
    assert result["rows"][0] == {"name": name, "psnr": p, "ssim": s}


def test_evaluate_perfect_and_wrong_size(dataset):
    root, _, _ = dataset
    hrs = {lr.tobytes(): hr for _, lr, hr in dataset_pairs(root, 4)}
    lines = []
    result = evaluate(lambda lr: hrs[lr.tobytes()], root, 4, out=lines.append)
    # exact reproductions count as PSNR_CAP (100 dB): the mean stays finite, never "inf"
    assert result["mean_psnr"] == PSNR_CAP and result["mean_ssim"] == pytest.approx(1.0)
    assert lines[-1].startswith("mean PSNR 100.0000 ") and "inf" not in " ".join(lines)
    # one exact image among others: a finite mean of the capped values
    first = {next(dataset_pairs(root, 4))[1].tobytes()}
    mixed = evaluate(lambda lr: hrs[lr.tobytes()] if lr.tobytes() in first else upscale(lr, 4),
                     root, 4, out=lambda s: None)
    assert mixed["rows"][0]["psnr"] == PSNR_CAP
    assert mixed["mean_psnr"] == pytest.approx(np.mean([r["psnr"] for r in mixed["rows"]]))
    assert math.isfinite(mixed["mean_psnr"]) and mixed["mean_psnr"] < PSNR_CAP
    with pytest.raises(DatasetError, match="expected"):
        evaluate(lambda lr: upscale(lr, 2), root, 4, out=lambda s: None)


def test_evaluate_reports_progress(dataset):
    root, _, _ = dataset
    calls = []
    evaluate(lambda lr: upscale(lr, 4), root, 4, out=lambda s: None,
             progress=lambda *a: calls.append(a))
    assert calls == [(0, 3, "a_gray"), (1, 3, "b_rgb"), (2, 3, "c_given"), (3, 3, "")]


@pytest.mark.parametrize("name, expected", [("Set5", 28.43), ("Set14", 25.99), ("B100", 25.96)])
def test_bicubic_baseline_matches_published(name, expected):
    folder = SHARED / "data" / "benchmark" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: ../shared (test data) is not beside this checkout")
    result = evaluate(lambda lr: upscale(lr, 4), folder, 4, out=lambda s: None)
    print(f"{name} bicubic x4: PSNR {result['mean_psnr']:.4f} SSIM {result['mean_ssim']:.4f}")
    assert round(result["mean_psnr"], 2) == expected


def test_tables_psnr_scores_the_engine_on_the_tables(dataset):
    from rclut_numba.engine import LutModel
    from rclut_numba.evaluation import tables_psnr
    from rclut_numba.spec import ModelSpec
    from strategies import random_arrays

    root, _, _ = dataset
    spec = ModelSpec.from_dict({"name": "t", "scale": 4, "interval": 64,
                                "stages": [["rc3-S", "S"]]})
    arrays = random_arrays(spec, seed=1)
    expected = evaluate(LutModel(spec, arrays).upscale, root, 4, out=lambda _s: None)["mean_psnr"]
    assert tables_psnr(spec, arrays, root) == expected
    # other tables, another score: the arrays are what is scored
    assert tables_psnr(spec, random_arrays(spec, seed=2), root) != expected

"""rclut-train pack: one file of LR/HR patches, exact to the folders it came from, validated on
load, read by train, finetune and the pipeline wherever a folder is."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline_configs import tiny_pipeline_config
from rclut_numba.bicubic import downscale
from rclut_numba.imaging import read_image
from training.cli import main as cli_main
from training.data import DataError, SRDataset, load_pack, synthetic_images
from training.pack import write_pack
from training.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
SCALE, PATCH = 4, 16


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("pack_images")
    synthetic_images(d / "a", n=3, size=96)
    synthetic_images(d / "b", n=1, size=40, seed=4)  # smaller than one 64 px HR patch: skipped
    return d


@pytest.fixture(scope="module")
def pack(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "train_x4.npz"
    info = write_pack([images], out, scale=SCALE, patch=PATCH, max_bytes=60_000,
                      log=lambda _s: None)
    return out, info


def test_a_pack_fits_its_size_and_holds_the_folders_pixels(images, pack):
    out, info = pack
    assert out.stat().st_size == info["bytes"] <= 60_000
    p = load_pack(out, scale=SCALE, crop=12)
    assert len(p.hr) == info["patches"] > 10 and p.patch == PATCH and info["images"] == 3
    assert p.sources == [f"{images.name}/a/synth_{i}.png" for i in range(3)]
    for (k, c, y, x), hr, lr in zip(p.origin, p.hr, p.lr, strict=True):
        whole = read_image(images / p.sources[k].split("/", 1)[1])
        whole = whole if whole.ndim == 3 else whole[:, :, None]
        s = SCALE
        assert np.array_equal(hr, whole[s * y:s * (y + PATCH), s * x:s * (x + PATCH), c])
        # LR of the whole image, cut: what a folder run sees at that place
        assert np.array_equal(lr, downscale(whole, s)[y:y + PATCH, x:x + PATCH, c])


def test_a_smaller_pack_is_a_prefix_of_a_larger_one(images, pack, tmp_path):
    big = load_pack(pack[0])
    write_pack([images], tmp_path / "small.npz", scale=SCALE, patch=PATCH, max_bytes=20_000,
               log=lambda _s: None)
    small = load_pack(tmp_path / "small.npz")
    n = len(small.hr)
    assert 0 < n < len(big.hr)
    assert np.array_equal(small.origin, big.origin[:n]) and np.array_equal(small.hr, big.hr[:n])


def _save_like_a_pack(path, **changes):
    arrays = {"format": np.array("rclut-train-pack"), "version": np.array(1),
              "scale": np.array(4), "hr": np.zeros((2, 64, 64), np.uint8),
              "lr": np.zeros((2, 16, 16), np.uint8), "origin": np.zeros((2, 4), np.int32),
              "sources": np.array(["a.png"])}
    arrays.update(changes)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"hr": None}, "is not a training pack"),
    ({"format": np.array("something-else")}, "expected rclut-train-pack version 1"),
    ({"hr": np.zeros((2, 64, 64), np.float32)}, "must be uint8"),
    ({"hr": np.zeros((2, 60, 64), np.uint8)}, "inconsistent shapes"),
    ({"origin": np.zeros((3, 4), np.int32)}, "inconsistent shapes"),
    ({"scale": np.array(2), "hr": np.zeros((2, 32, 32), np.uint8)},
     "holds x2 patches; this model is x4"),
    ({}, "16px LR patches, smaller than the 24px crop"),
])
def test_a_bad_pack_is_refused_with_a_reason(tmp_path, changes, message):
    path = _save_like_a_pack(tmp_path / "bad.npz", **changes)
    with pytest.raises(DataError, match=message):
        load_pack(path, scale=4, crop=24)


def test_a_damaged_or_missing_pack_is_refused(pack, tmp_path):
    data = pack[0].read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:len(data) // 2])
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF])
                        + data[len(data) // 2 + 1:])
    for bad in (cut, flipped):
        with pytest.raises(DataError, match="cannot read training pack"):
            load_pack(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_pack(tmp_path / "none.npz")


def test_the_dataset_reads_a_pack_beside_a_folder(images, pack, tmp_path):
    logs = []
    ds = SRDataset([images / "a", pack[0]], SCALE, 12, tmp_path / "cache", log=logs.append)
    assert len(ds) == 3 + len(load_pack(pack[0]).hr)
    assert any("pack patches" in line for line in logs)
    lr, hr = ds.batch(0, 8)
    assert lr.shape == (8, 1, 12, 12) and hr.shape == (8, 1, 48, 48)


def test_train_and_the_cli_read_a_pack(images, pack, tmp_path, capsys):
    cfg = str(ROOT / "training" / "configs" / "tiny.toml")
    argv = ["train", "--config", cfg, "--data", str(pack[0]), "--out", str(tmp_path / "r"),
            "--steps", "2", "--device", "cpu", "--quiet", "--set", "crop=12"]
    assert cli_main(argv) == 0
    assert (tmp_path / "r" / "last.pt").is_file()
    assert cli_main(["pack", "--data", str(images), "-o", str(pack[0])]) == 2  # no --force
    assert "exists; use --force" in capsys.readouterr().err


def test_a_pipeline_trains_and_finetunes_from_a_pack(pack, tmp_path, monkeypatch):
    """Its data a pack, a pipeline trains and fine-tunes from it, on the device train's "auto"
    picks (CUDA when present)."""
    import training.train

    asked = []
    resolve = training.train.resolve_device
    monkeypatch.setattr(training.train, "resolve_device",
                        lambda name, *a: asked.append(name) or resolve(name, *a))
    config = tiny_pipeline_config(tmp_path, legs=1, data=pack[0], steps=2)
    status = run_pipeline(config, until="ft1", say=lambda _s: None)
    assert status == {"train": "done", "transfer": "done", "ft1": "done"}
    assert asked == ["auto"]
    logged = [json.loads(x) for x in (tmp_path / "run" / "ft1" / "log.jsonl").read_text()
              .splitlines()]
    assert any("loss" in r for r in logged)

"""One embedded default model per scale: ``load_model(scale=...)``, ``rclut ... --scale``, and
the size budget of everything embedded."""
import imageio.v3 as iio
import numpy as np
import pytest

from rclut_numba import BundleError, engine, load_model, save_bundle
from rclut_numba.cli import main
from rclut_numba.spec import ModelSpec, srlut
from strategies import random_arrays

EMBEDDED_BUDGET = 5 * 10 ** 6  # bytes, all embedded models together (issue 29)


def test_embedded_models_fit_the_budget():
    files = sorted(engine.MODELS_DIR.glob("*.npz"))
    total = sum(f.stat().st_size for f in files)
    print(f"embedded models: {', '.join(f.name for f in files)}: {total} bytes")
    assert total <= EMBEDDED_BUDGET


def test_each_embedded_model_has_its_scale():
    for scale in engine.embedded_scales():
        assert load_model(scale=scale).scale == scale


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An embedded-models folder holding a small x2 model only."""
    folder = tmp_path / "models"
    folder.mkdir()
    s = srlut()
    spec = ModelSpec("small x2", 2, s.stages, interval=64)
    save_bundle(folder / "rclut_x2.npz", spec, random_arrays(spec, 0))
    monkeypatch.setattr(engine, "MODELS_DIR", folder)
    return folder


def test_load_model_picks_the_embedded_model_of_a_scale(models_dir):
    model = load_model(scale=2)
    assert model.scale == 2 and model.source == str(models_dir / "rclut_x2.npz")
    with pytest.raises(BundleError, match=r"no default model for x3 is embedded .*embedded: x2"):
        load_model(scale=3)
    with pytest.raises(BundleError, match="no default model for x4"):
        load_model()  # the default scale is 4


def test_load_model_scale_must_match_a_given_model(models_dir):
    path = models_dir / "rclut_x2.npz"
    assert load_model(path, scale=2).scale == 2
    with pytest.raises(BundleError, match="an x2 model, but scale 4 was asked for"):
        load_model(path, scale=4)


@pytest.mark.parametrize("scale", [0, 9, 2.0, True, "2"])
def test_load_model_refuses_a_bad_scale(scale):
    with pytest.raises(ValueError, match="scale must be an integer 1..8"):
        load_model(scale=scale)


def test_cli_scale_picks_the_embedded_model(models_dir, tmp_path, capsys):
    src = tmp_path / "in.png"
    iio.imwrite(src, np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    assert main(["upscale", str(src), "-o", str(tmp_path / "x2.png"), "--scale", "2"]) == 0
    assert iio.imread(tmp_path / "x2.png").shape == (10, 14, 3)
    assert main(["info", "--scale", "2"]) == 0
    assert "small x2: x2" in capsys.readouterr().out


@pytest.mark.parametrize("command", [
    ["upscale", "IN", "-o", "OUT", "--scale", "3"],
    ["info", "--scale", "3"],
    ["bench", "--scale", "3", "--size", "8x8", "--repeat", "1"],
    ["eval", "DATA", "--scale", "3"],
])
def test_cli_missing_scale_is_one_line(models_dir, tmp_path, capsys, command):
    src = tmp_path / "in.png"
    iio.imwrite(src, np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "data" / "HR").mkdir(parents=True)
    iio.imwrite(tmp_path / "data" / "HR" / "a.png", np.zeros((6, 6, 3), np.uint8))
    subst = {"IN": str(src), "OUT": str(tmp_path / "out.png"), "DATA": str(tmp_path / "data")}
    assert main([subst.get(a, a) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rclut: error: no default model for x3 is embedded")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("command", [
    ["upscale", "IN", "-o", "OUT", "--model", "MODEL", "--scale", "4"],
    ["info", "MODEL", "--scale", "4"],
    ["eval", "DATA", "--model", "MODEL", "--scale", "4"],
    ["bench", "--model", "MODEL", "--scale", "4", "--size", "8x8", "--repeat", "1"],
])
def test_cli_refuses_a_scale_other_than_the_models(models_dir, tmp_path, capsys, command):
    src = tmp_path / "in.png"
    iio.imwrite(src, np.zeros((4, 4, 3), np.uint8))
    subst = {"IN": str(src), "OUT": str(tmp_path / "out.png"), "DATA": str(tmp_path),
             "MODEL": str(models_dir / "rclut_x2.npz")}
    assert main([subst.get(a, a) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "an x2 model, but scale 4 was asked for" in err


def test_cli_scale_argument_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["upscale", "a.png", "-o", "b.png", "--scale", "x2"])
    assert e.value.code == 2 and "expected an integer scale" in capsys.readouterr().err


def test_cli_arithmetic_choice(models_dir, tmp_path, capsys):
    # the embedded x2 here is SR-LUT's layout, trained by us: integer by default, srlut on ask
    src = tmp_path / "in.png"
    iio.imwrite(src, np.random.default_rng(1).integers(0, 256, (6, 6), dtype=np.uint8))
    outs = {}
    for arithmetic in ("integer", "srlut"):
        dst = tmp_path / f"{arithmetic}.png"
        assert main(["upscale", str(src), "-o", str(dst), "--scale", "2",
                     "--arithmetic", arithmetic]) == 0
        outs[arithmetic] = iio.imread(dst)
    assert main(["info", "--scale", "2"]) == 0
    assert "arithmetic: integer" in capsys.readouterr().out
    model = load_model(scale=2)
    image = iio.imread(src)
    assert np.array_equal(outs["integer"], model.upscale(image))
    assert np.array_equal(outs["srlut"], load_model(scale=2, arithmetic="srlut").upscale(image))
    assert not np.array_equal(outs["integer"], outs["srlut"])

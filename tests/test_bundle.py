"""Bundle round trip and every way a bundle file can be wrong."""
import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rclut_numba.bundle import BundleError, load_bundle, save_bundle
from rclut_numba.engine import LutModel
from rclut_numba.spec import ModelSpec, SpecError, rclut_paper
from strategies import random_arrays, specs


def small_rclut():
    s = rclut_paper()
    return ModelSpec(s.name, s.scale, s.stages, interval=64)


@settings(max_examples=15)
@given(spec=specs(), seed=st.integers(0, 2 ** 32 - 1))
def test_round_trip(tmp_path_factory, spec, seed):
    arrays = random_arrays(spec, seed)
    path = tmp_path_factory.mktemp("b") / "m.npz"
    save_bundle(path, spec, arrays)
    spec2, arrays2 = load_bundle(path)
    assert spec2 == spec
    assert arrays2.keys() == arrays.keys()
    for k in arrays:
        assert arrays2[k].dtype == arrays[k].dtype and np.array_equal(arrays2[k], arrays[k])


def write_raw(path, spec_obj, arrays):
    """A bundle written by hand, so it can be wrong in ways save_bundle refuses."""
    with zipfile.ZipFile(path, "w") as zf:
        if spec_obj is not None:
            text = spec_obj if isinstance(spec_obj, str) else json.dumps(spec_obj)
            zf.writestr("spec.json", text)
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=True)
            zf.writestr(f"{name}.npy", buf.getvalue())


@pytest.fixture
def good():
    spec = small_rclut()
    return spec, random_arrays(spec, 0)


def test_wrong_shape(tmp_path, good):
    spec, arrays = good
    arrays["s2_b2_lut"] = arrays["s2_b2_lut"][:, :4].copy()
    write_raw(tmp_path / "m.npz", spec.to_dict(), arrays)
    with pytest.raises(BundleError, match=r"s2_b2_lut.*shape"):
        load_bundle(tmp_path / "m.npz")


def test_wrong_dtype(tmp_path, good):
    spec, arrays = good
    arrays["s1_b1_lut"] = arrays["s1_b1_lut"].astype(np.int16)
    write_raw(tmp_path / "m.npz", spec.to_dict(), arrays)
    with pytest.raises(BundleError, match=r"s1_b1_lut.*dtype int16"):
        load_bundle(tmp_path / "m.npz")


def test_missing_key(tmp_path, good):
    spec, arrays = good
    del arrays["s1_b3_rc_table"]
    write_raw(tmp_path / "m.npz", spec.to_dict(), arrays)
    with pytest.raises(BundleError, match="missing array 's1_b3_rc_table'"):
        load_bundle(tmp_path / "m.npz")


def test_object_array(tmp_path, good):
    spec, arrays = good
    arrays["s1_b1_lut"] = np.array([{"x": 1}], dtype=object)
    write_raw(tmp_path / "m.npz", spec.to_dict(), arrays)
    with pytest.raises(BundleError, match="object array"):
        load_bundle(tmp_path / "m.npz")


def test_truncated(tmp_path, good):
    spec, arrays = good
    save_bundle(tmp_path / "m.npz", spec, arrays)
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(tmp_path / "t.npz")


def test_spec_inconsistent_with_arrays(tmp_path, good):
    spec, arrays = good
    d = spec.to_dict()
    d["stages"][1][0]["pattern"] = "S"  # 1D branch now claims a 4D LUT
    write_raw(tmp_path / "m.npz", d, arrays)
    with pytest.raises(BundleError, match=r"s2_b1_lut.*shape"):
        load_bundle(tmp_path / "m.npz")
    d = spec.to_dict()
    d["stages"][0][0]["rc"] = 0  # RC tables without an RC window
    write_raw(tmp_path / "m2.npz", d, arrays)
    with pytest.raises(BundleError, match="not part of spec"):
        load_bundle(tmp_path / "m2.npz")


@pytest.mark.parametrize("spec_text, msg", [
    (None, "not a model bundle"),
    ("{nope", "not valid JSON"),
    ({"name": "x", "scale": 4, "stages": [["Q"]]}, "unknown pattern"),
    ({"name": "x", "scale": 4, "stages": [[{"pattern": "S", "rc": 4}]]}, "odd"),
    ({"name": "x", "scale": 4, "interval": 10, "stages": [["S"]]}, "interval"),
    ({"name": "x", "scale": 4, "stages": [["S"]], "format_version": 99}, "format_version"),
    ({"name": "x", "stages": [["S"]]}, "missing 'scale'"),
])
def test_bad_specs(tmp_path, spec_text, msg):
    write_raw(tmp_path / "m.npz", spec_text, {})
    with pytest.raises(BundleError, match=msg):
        load_bundle(tmp_path / "m.npz")


def test_unsorted_thresholds(tmp_path, good):
    spec, arrays = good
    arrays["s1_b1_rc_thresholds"] = arrays["s1_b1_rc_thresholds"][::-1].copy()
    write_raw(tmp_path / "m.npz", spec.to_dict(), arrays)
    with pytest.raises(BundleError, match="sorted"):
        load_bundle(tmp_path / "m.npz")


def test_not_a_zip_and_missing(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(tmp_path / "x.npz")
    with pytest.raises(BundleError, match="no such model"):
        load_bundle(tmp_path / "absent.npz")


def test_save_is_atomic_and_refuses_overwrite(tmp_path, good):
    spec, arrays = good
    path = tmp_path / "m.npz"
    save_bundle(path, spec, arrays)
    before = path.read_bytes()
    with pytest.raises(BundleError, match="exists"):
        save_bundle(path, spec, arrays)
    bad = dict(arrays)
    bad["s1_b1_lut"] = bad["s1_b1_lut"][:3]
    with pytest.raises(BundleError):
        save_bundle(path, spec, bad, force=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temp files left
    with pytest.raises(BundleError, match="does not exist"):
        save_bundle(tmp_path / "nope" / "m.npz", spec, arrays)


def test_spec_json_and_labels_round_trip():
    spec = small_rclut()
    assert ModelSpec.from_json(spec.to_json()) == spec
    short = ModelSpec.from_dict({"name": "RC-LUT", "scale": 4, "interval": 64,
                                 "stages": [["rc3-S", "rc5-S", "rc7-S"],
                                            ["rc3-1", "rc5-S", "rc7-1"]]})
    assert short == spec
    assert spec.margin == (3 + 1) + 3  # rc7-S reads 4 px away; stage 2 at most 3 (rc7-1)
    with pytest.raises(SpecError, match="rc5x"):
        ModelSpec.from_dict({"name": "r", "scale": 4, "stages": [["rc5x-S"]]})


def test_model_from_loaded_bundle_runs(tmp_path, good):
    spec, arrays = good
    save_bundle(tmp_path / "m.npz", spec, arrays)
    model = LutModel(*load_bundle(tmp_path / "m.npz"))
    assert model.upscale(np.zeros((3, 5), np.uint8)).shape == (12, 20)

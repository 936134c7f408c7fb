"""ModelSpec.stage_rescale and adds_input: the one statement of how a stage's sum becomes its
output."""
import dataclasses

import numpy as np

from rclut_numba.bundle import load_bundle, save_bundle
from rclut_numba.spec import ModelSpec, mulut_sdy_x2, rclut_paper, srlut
from strategies import random_arrays


def test_stage_rescale_matches_the_documented_rule():
    for spec in (srlut(), mulut_sdy_x2(), rclut_paper()):
        last = len(spec.stages) - 1
        for si, stage in enumerate(spec.stages):
            n = len(stage.branches)
            want = (spec.interval * n, 0) if si == last else (spec.interval * 4 * n, 127)
            assert spec.stage_rescale(si) == want
            divisor, bias = spec.stage_rescale(si, interpolated=False)
            assert (divisor * spec.interval, bias) == want


def test_stage_rescale_follows_the_interval():
    spec = ModelSpec.from_dict({"name": "t", "scale": 2, "interval": 64,
                                "stages": [["S", "D"], ["Y"]]})
    assert spec.stage_rescale(0) == (64 * 4 * 2, 127)
    assert spec.stage_rescale(1) == (64, 0)
    assert spec.stage_rescale(1, interpolated=False) == (1, 0)


def test_only_a_residual_models_last_stage_adds_the_input():
    spec = rclut_paper()
    assert not any(spec.adds_input(si) for si in range(2))
    residual = dataclasses.replace(spec, residual=True)
    assert [residual.adds_input(si) for si in range(2)] == [False, True]


def test_eight_orientations_divide_by_twice_the_terms():
    """The stage sum holds twice the terms; each table keeps its units."""
    four = rclut_paper()
    eight = dataclasses.replace(four, orientations=8)
    for si in range(2):
        (d4, b4), (d8, b8) = four.stage_rescale(si), eight.stage_rescale(si)
        assert (d8, b8) == (2 * d4, b4)


def test_orientations_round_trip_and_four_is_written_as_version_3(tmp_path):
    four = rclut_paper()
    assert four.to_dict()["format_version"] == 3 and "orientations" not in four.to_dict()
    eight = dataclasses.replace(four, orientations=8)
    assert eight.to_dict()["format_version"] == 4 and eight.to_dict()["orientations"] == 8
    assert ModelSpec.from_json(eight.to_json()) == eight != four
    assert "8 orientations" in eight.describe() and "orientations" not in four.describe()
    path = save_bundle(tmp_path / "m.npz", eight, random_arrays(eight, seed=0))
    spec, arrays = load_bundle(path)
    assert spec == eight
    assert np.array_equal(arrays["s1_b1_lut"], random_arrays(eight, seed=0)["s1_b1_lut"])

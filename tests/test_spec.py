"""ModelSpec.stage_rescale and adds_input: the one statement of how a stage's sum becomes its
output."""
import dataclasses

from rclut_numba.spec import ModelSpec, mulut_sdy_x2, rclut_paper, srlut


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

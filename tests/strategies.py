"""Hypothesis strategies shared by the engine tests and the torch parity tests."""
import numpy as np
from hypothesis import strategies as st

from rclut_numba.spec import Branch, ModelSpec, Stage, array_key


@st.composite
def branches(draw, allow_rc=True):
    pattern = draw(st.sampled_from(["S", "D", "Y", "1"]))
    rc = draw(st.sampled_from([0, 0, 1, 3, 5, 7])) if allow_rc else 0
    return Branch(pattern, rc)


@st.composite
def specs(draw, max_stages=2, max_branches=3, intervals=(32, 64, 128), allow_rc=True):
    """Random model layouts; coarse intervals keep 4D LUTs small (9**4, 5**4 or 3**4 rows)."""
    n_stages = draw(st.integers(1, max_stages))
    stages = tuple(
        Stage(tuple(draw(st.lists(branches(allow_rc), min_size=1, max_size=max_branches))))
        for _ in range(n_stages))
    return ModelSpec("random", draw(st.integers(1, 4)), stages,
                     interval=draw(st.sampled_from(intervals)), residual=draw(st.booleans()),
                     orientations=draw(st.sampled_from((4, 8))))


def random_arrays(spec: ModelSpec, seed: int) -> dict:
    """Tables over their full ranges: int8 entries -128..127, RC sums with thresholds inside."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for si, bi, br in spec.branches():
        key = array_key(si, bi)
        shape = (spec.lut_rows(br), spec.n_outputs(si))
        arrays[f"{key}_lut"] = rng.integers(-128, 128, shape, dtype=np.int8)
        if br.rc:
            n2 = br.rc * br.rc
            table = rng.integers(-32768, 32768, (n2, 256)).astype(np.int16)
            lo = int(table.min(axis=1).astype(np.int64).sum())
            hi = int(table.max(axis=1).astype(np.int64).sum())
            # thresholds spread over the central part of the reachable sums, so q varies
            span = max(1, (hi - lo) // 4)
            thr = np.sort(rng.integers(lo + span, hi - span + 1, 255)).astype(np.int32)
            arrays[f"{key}_rc_table"] = table
            arrays[f"{key}_rc_thresholds"] = thr
    return arrays


@st.composite
def images(draw, max_side=40, min_side=1):
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(["noise", "noise", "flat", "extremes", "smooth"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if kind == "flat":
        return np.full((h, w), draw(st.integers(0, 255)), np.uint8)
    if kind == "extremes":
        return (rng.integers(0, 2, (h, w)) * 255).astype(np.uint8)
    if kind == "smooth":
        yy, xx = np.mgrid[0:h, 0:w]
        return ((yy * 37 + xx * 11 + rng.integers(0, 256)) % 256).astype(np.uint8)
    return rng.integers(0, 256, (h, w), dtype=np.uint8)

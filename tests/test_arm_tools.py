"""The pure parts of `make test-arm` (scripts/arm): the comparison that decides pass or fail, and
the wheel platform tags. The emulated run itself is `make test-arm`, not part of this suite."""
import importlib.util
import sys
from pathlib import Path

ARM = Path(__file__).resolve().parents[1] / "scripts" / "arm"


def _load(name, module_name):
    # scripts/arm is not a package: load by path, registered so dataclasses and the scripts'
    # own `from arm_env import ...` resolve
    spec = importlib.util.spec_from_file_location(module_name, ARM / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_saved_path = list(sys.path)
arm_env = _load("arm_env", "arm_env")
test_arm = _load("test_arm", "arm_test_arm")
sys.path[:] = _saved_path  # test_arm.py puts scripts/arm first for its own imports


def _report(*cases):
    return {"cases": list(cases)}


def _case(name, sha="a" * 64, **extra):
    return {"case": name, "input_sha256": "i", "shape": [4, 4], "dtype": "uint8", "sha256": sha,
            **extra}


def test_identical_reports_pass():
    x86 = _report(_case("m rgb"), {"case": "mulut", "skipped": "absent"})
    assert test_arm.compare(x86, x86) == []


def test_any_byte_difference_fails():
    problems = test_arm.compare(_report(_case("m rgb")), _report(_case("m rgb", sha="b" * 64)))
    assert len(problems) == 1 and "m rgb: sha256 differs" in problems[0]


def test_a_case_on_one_side_only_fails():
    both = _case("m rgb")
    assert test_arm.compare(_report(both, _case("m grey")), _report(both)) == [
        "m grey: only on x86"]
    assert test_arm.compare(_report(both), _report(both, _case("m grey"))) == [
        "m grey: only on aarch64"]


def test_skipped_on_one_side_only_fails():
    problems = test_arm.compare(_report(_case("srlut")),
                                _report({"case": "srlut", "skipped": "does not load"}))
    assert any("skipped differs" in p for p in problems)


def test_unrepeatable_output_fails():
    problems = test_arm.compare(_report(_case("m")), _report(_case("m", repeatable=False)))
    assert problems == ["m: a second call gave other bytes"]


def test_manylinux_tags_cover_older_glibcs():
    tags = arm_env.manylinux_platforms("2.36")
    assert tags[0] == "manylinux2014_aarch64"
    assert "manylinux_2_17_aarch64" in tags and "manylinux_2_28_aarch64" in tags
    assert tags[-1] == "manylinux_2_36_aarch64"


def test_wheels_are_pinned_to_the_installed_versions():
    import numba
    import numpy
    pins = arm_env.pinned_wheels()
    assert f"numpy=={numpy.__version__}" in pins and f"numba=={numba.__version__}" in pins

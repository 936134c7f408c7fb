"""Packed RC window tables: exact storage, projection onto their grid, bundles with either form."""
import re
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rclut_numba.analysis import random_model
from rclut_numba.bundle import BundleError, bundle_size_kb, load_bundle, save_bundle
from rclut_numba.cli import main as cli_main
from rclut_numba.rc_storage import (
    MAX_SHIFT,
    pack_rc_table,
    packed_nbytes,
    project_rc_table,
    project_rc_tables,
    row_shift,
    unpack_rc_table,
)
from rclut_numba.spec import ModelSpec, rclut_paper
from test_bundle import write_raw


def small_rclut():
    s = rclut_paper()
    return ModelSpec(s.name, s.scale, s.stages, interval=64)


@st.composite
def rc_tables(draw):
    """int16 tables whose rows span anything from a few units to the full int16 range."""
    n = draw(st.sampled_from([1, 3, 5]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    spans = 2 ** rng.integers(0, 16, n * n)
    rows = rng.integers(-spans[:, None], spans[:, None], (n * n, 256))
    return np.clip(rows, -32768, 32767).astype(np.int16)


def slow_project(table):
    """The projection written out row by row and entry by entry."""
    out = table.astype(np.int64).copy()
    for p in range(table.shape[0]):
        if p == table.shape[0] // 2:
            continue
        k = 0
        while max(abs(int(v)) for v in table[p]) > 127 * 2 ** k:
            k += 1
        if k == 0 or k > 8:
            continue
        for v in range(256):
            out[p, v] = round(int(table[p, v]) / 2 ** k) * 2 ** k  # Python round: half to even
    return out


@settings(max_examples=60, deadline=None)
@given(table=rc_tables())
def test_projection_packs_exactly_and_is_idempotent(table):
    projected = project_rc_table(table)
    assert projected.dtype == np.int16
    assert np.array_equal(projected, slow_project(table))
    centre = table.shape[0] // 2
    assert np.array_equal(projected[centre], table[centre])
    for p in range(table.shape[0]):  # each entry moves by at most half its row's grid step
        k = row_shift(table[p])
        if k <= MAX_SHIFT:
            assert np.abs(projected[p].astype(int) - table[p]).max() <= (1 << k) // 2
    assert np.array_equal(project_rc_table(projected), projected)
    packed = pack_rc_table(projected)
    needs_int16 = any(row_shift(r) > MAX_SHIFT for i, r in enumerate(table) if i != centre)
    if needs_int16:  # a full-range row that is not the centre: the bundle keeps int16
        assert packed is None
    else:
        centre_row, codes, shifts = packed
        assert (centre_row.dtype, codes.dtype, shifts.dtype) == (np.int16, np.int8, np.uint8)
        assert np.abs(codes.astype(int)).max(initial=0) <= 127
        assert np.array_equal(unpack_rc_table(*packed), projected)


@settings(max_examples=30, deadline=None)
@given(table=rc_tables())
def test_pack_refuses_tables_off_the_grid(table):
    packed = pack_rc_table(table)
    if packed is not None:
        assert np.array_equal(unpack_rc_table(*packed), table)
    else:
        assert not np.array_equal(project_rc_table(table), table) or any(
            row_shift(r) > MAX_SHIFT for i, r in enumerate(table) if i != table.shape[0] // 2)


def test_bundle_stores_packed_tables_and_counts_them(tmp_path):
    spec = small_rclut()
    arrays = random_model(spec, 3).arrays
    path = tmp_path / "m.npz"
    save_bundle(path, spec, arrays)
    members = sorted(n[:-4] for n in zipfile.ZipFile(path).namelist() if n.endswith(".npy"))
    assert "s1_b3_rc_codes" in members and not any(n.endswith("_rc_table") for n in members)
    spec2, arrays2 = load_bundle(path)
    assert arrays2.keys() == arrays.keys()
    for k in arrays:
        assert arrays2[k].dtype == arrays[k].dtype and np.array_equal(arrays2[k], arrays[k])
    # 6 windows: 166 positions, 6 centre rows of 512 bytes and 160 rows of 257
    rc_bytes = sum(packed_nbytes(br.rc ** 2) for _, _, br in spec.branches())
    assert rc_bytes == 6 * 512 + 160 * 257
    assert bundle_size_kb(spec, arrays) == pytest.approx(bundle_size_kb(spec))
    lut_bytes = sum(a.nbytes for n, a in arrays.items() if "_rc_" not in n)
    assert bundle_size_kb(spec, arrays) * 1024 == lut_bytes + rc_bytes + 6 * 255 * 4


def test_bundle_keeps_off_grid_tables_as_int16(tmp_path):
    spec = small_rclut()
    arrays = random_model(spec, 4).arrays
    arrays["s1_b2_rc_table"] = arrays["s1_b2_rc_table"].copy()
    arrays["s1_b2_rc_table"][0, 0] += 1 if arrays["s1_b2_rc_table"][0, 0] < 0 else -1
    if pack_rc_table(arrays["s1_b2_rc_table"]) is not None:  # row 0 happened to have shift 0
        arrays["s1_b2_rc_table"][0] = np.arange(256, dtype=np.int16) * 3 + 1
    assert pack_rc_table(arrays["s1_b2_rc_table"]) is None
    path = tmp_path / "m.npz"
    save_bundle(path, spec, arrays)
    members = zipfile.ZipFile(path).namelist()
    assert "s1_b2_rc_table.npy" in members and "s1_b1_rc_codes.npy" in members
    _, arrays2 = load_bundle(path)
    assert np.array_equal(arrays2["s1_b2_rc_table"], arrays["s1_b2_rc_table"])
    packed_kb = bundle_size_kb(spec)
    extra = 25 * 256 * 2 - packed_nbytes(25)  # this one window stored unpacked
    assert bundle_size_kb(spec, arrays) == pytest.approx(packed_kb + extra / 1024)


def test_format_version_1_bundles_still_load(tmp_path):
    spec = small_rclut()
    arrays = random_model(spec, 5).arrays
    d = spec.to_dict()
    d["format_version"] = 1
    write_raw(tmp_path / "v1.npz", d, arrays)  # every RC table as one int16 member
    spec2, arrays2 = load_bundle(tmp_path / "v1.npz")
    assert spec2 == spec
    assert all(np.array_equal(arrays2[k], arrays[k]) for k in arrays)


def _packed_members(spec, arrays):
    out = {}
    for name, a in arrays.items():
        if name.endswith("_rc_table"):
            key = name[: -len("_rc_table")]
            centre, codes, shifts = pack_rc_table(a)
            out.update({f"{key}_rc_centre": centre, f"{key}_rc_codes": codes,
                        f"{key}_rc_shifts": shifts})
        else:
            out[name] = a
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.pop("s1_b1_rc_shifts"), "missing array 's1_b1_rc_shifts'"),
    (lambda m: m.update(s1_b1_rc_codes=m["s1_b1_rc_codes"].astype(np.int16)),
     r"s1_b1_rc_codes' has dtype int16, expected int8"),
    (lambda m: m.update(s1_b2_rc_centre=m["s1_b2_rc_centre"][:255]),
     r"s1_b2_rc_centre' has shape \(255,\), expected \(256,\)"),
    (lambda m: m.update(s1_b3_rc_shifts=np.full(48, 9, np.uint8)), "shift 9 exceeds 8"),
    (lambda m: m.update(s2_b1_rc_table=np.zeros((9, 256), np.int16)), "both packed and unpacked"),
])
def test_damaged_packed_members(tmp_path, capsys, damage, message):
    spec = small_rclut()
    members = _packed_members(spec, random_model(spec, 6).arrays)
    damage(members)
    write_raw(tmp_path / "m.npz", spec.to_dict(), members)
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path / "m.npz")
    capsys.readouterr()
    assert cli_main(["info", str(tmp_path / "m.npz")]) == 2  # the CLI: one line, exit 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_convert_pack_rc_and_info(tmp_path, capsys):
    spec = small_rclut()
    arrays = random_model(spec, 7).arrays
    # off the grid, as an int16 table from an older transfer would be
    arrays = {k: (v // 4 + (np.arange(v.size).reshape(v.shape) % 3 - 1).astype(np.int16)
                  if k.endswith("_rc_table") else v) for k, v in arrays.items()}
    src = tmp_path / "int16.npz"
    save_bundle(src, spec, arrays)
    assert "s1_b1_rc_table.npy" in zipfile.ZipFile(src).namelist()
    out = tmp_path / "packed.npz"
    assert cli_main(["convert", str(src), "-o", str(out), "--pack-rc"]) == 0
    _, packed = load_bundle(out)
    expected = project_rc_tables(arrays)
    assert all(np.array_equal(packed[k], expected[k]) for k in arrays)
    assert not np.array_equal(packed["s1_b1_rc_table"], arrays["s1_b1_rc_table"])
    saved = bundle_size_kb(spec, arrays) - bundle_size_kb(spec, packed)
    assert saved == pytest.approx(160 * (512 - 257) / 1024)  # 160 non-centre rows, 255 B each
    capsys.readouterr()
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "s1_b3_rc_codes         int8   48x256" in text and "s1_b3_rc_table" not in text
    assert f"tables: {bundle_size_kb(spec):.1f} KB" in text

"""Turn LUT files published by MuLUT and SR-LUT into (spec, arrays) for a bundle."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .bundle import BundleError
from .spec import Branch, ModelSpec, Stage, array_key

# e.g. LUT_ft_x4_4bit_int8_s1_s.npy (fine-tuned) or LUT_x4_4bit_int8_s2_y.npy
_MULUT_NAME = re.compile(r"^LUT.*_x(\d+)_(\d+)bit_int8_s(\d+)_([a-z])\.npy$")
_MULUT_MODES = {"s": "S", "d": "D", "y": "Y"}
_SRLUT_NAME = re.compile(r"_x(\d+)_(\d+)bit_int8")


def _read_int8(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BundleError(f"{path}: cannot read LUT ({e})") from None
    if not isinstance(a, np.ndarray) or a.dtype != np.int8:
        raise BundleError(f"{path}: expected an int8 array, got {getattr(a, 'dtype', type(a))}")
    return a


def import_mulut_folder(folder) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """A folder of MuLUT files ``LUT*_x{s}_{b}bit_int8_s{stage}_{mode}.npy``; modes s, d, y."""
    folder = Path(folder)
    found: dict[tuple[int, str], Path] = {}
    scales, bits = set(), set()
    for f in sorted(folder.iterdir()):
        m = _MULUT_NAME.match(f.name)
        if not m:
            continue
        scales.add(int(m[1]))
        bits.add(int(m[2]))
        if m[4] not in _MULUT_MODES:
            raise BundleError(f"{f}: unknown MuLUT mode {m[4]!r} (expected s, d or y)")
        key = (int(m[3]), m[4])
        if key in found:
            raise BundleError(f"{folder}: two LUT files for stage {key[0]} mode {key[1]} "
                              f"({found[key].name}, {f.name})")
        found[key] = f
    if not found:
        raise BundleError(f"{folder}: no MuLUT LUT files (LUT*_x4_4bit_int8_s1_s.npy ...) found")
    if len(scales) != 1 or len(bits) != 1:
        raise BundleError(f"{folder}: LUT files disagree on scale {sorted(scales)} or bits {sorted(bits)}")
    scale, nbits = scales.pop(), bits.pop()
    stage_ids = sorted({s for s, _ in found})
    if stage_ids != list(range(1, len(stage_ids) + 1)):
        raise BundleError(f"{folder}: stages {stage_ids} are not 1..n")
    stages, arrays = [], {}
    for si, sid in enumerate(stage_ids):
        modes = [m for m in "sdy" if (sid, m) in found]
        stages.append(Stage(tuple(Branch(_MULUT_MODES[m]) for m in modes)))
        for bi, m in enumerate(modes):
            arrays[f"{array_key(si, bi)}_lut"] = _read_int8(found[(sid, m)])
    spec = ModelSpec(name=f"MuLUT ({folder.name})", scale=scale, interval=2 ** (8 - nbits),
                     stages=tuple(stages), extra={"imported_from": "MuLUT LUT files"})
    _reshape_to_spec(spec, arrays, folder)
    return spec, arrays


def import_srlut_file(path) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """One SR-LUT x{s} LUT (S pattern, one stage), e.g. ``Model_S_x4_4bit_int8.npy``."""
    path = Path(path)
    a = _read_int8(path)
    m = _SRLUT_NAME.search(path.name)
    if m:
        scale, interval = int(m[1]), 2 ** (8 - int(m[2]))
    else:  # infer from the shape: rows = levels**4, columns = scale**2
        a2 = a.reshape(a.shape[0], -1) if a.ndim else a
        levels = round(a2.shape[0] ** 0.25)
        scale = round(a2.shape[1] ** 0.5) if a2.ndim == 2 else 0
        if levels < 2 or 256 % (levels - 1) or scale < 1:
            raise BundleError(f"{path}: cannot tell scale and interval from shape {a.shape}; "
                              "name it like LUT_x4_4bit_int8.npy")
        interval = 256 // (levels - 1)
    spec = ModelSpec(name=f"SR-LUT ({path.stem})", scale=scale, interval=interval,
                     stages=(Stage((Branch("S"),)),), extra={"imported_from": "SR-LUT LUT file"})
    arrays = {f"{array_key(0, 0)}_lut": a}
    _reshape_to_spec(spec, arrays, path)
    return spec, arrays


def _reshape_to_spec(spec: ModelSpec, arrays: dict[str, np.ndarray], where) -> None:
    """Published LUTs come in assorted shapes (N, 1, 4, 4), (N, 16), ...: flatten to (rows, out)."""
    for name, (shape, _) in spec.expected_arrays().items():
        a = arrays[name]
        if a.size != shape[0] * shape[1]:
            raise BundleError(f"{where}: {name} has {a.size} entries, expected {shape[0]} x {shape[1]} "
                              f"for x{spec.scale} at interval {spec.interval}")
        arrays[name] = np.ascontiguousarray(a.reshape(shape))

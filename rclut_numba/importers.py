"""Turn LUT files published by MuLUT and SR-LUT into (spec, arrays) for a bundle."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .bundle import MAX_MODEL_BYTES, BundleError, check_model_file, read_npy_data, read_npy_header
from .spec import Branch, ModelSpec, SpecError, Stage, array_key

# e.g. LUT_ft_x4_4bit_int8_s1_s.npy (fine-tuned) or LUT_x4_4bit_int8_s2_y.npy
_MULUT_NAME = re.compile(r"^LUT.*_x(\d+)_(\d+)bit_int8_s(\d+)_([a-z])\.npy$")
_MULUT_MODES = {"s": "S", "d": "D", "y": "Y"}
_SRLUT_NAME = re.compile(r"_x(\d+)_(\d+)bit_int8")
SRLUT_SOURCE = "SR-LUT LUT file"  # extra["imported_from"]: the engine runs these as SR-LUT does


MULUT_STAGES = (1, 2)  # MuLUT-SDY-X2, the layout MuLUT publishes: six files
MAX_LUT_BYTES = MAX_MODEL_BYTES


def _read_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The ``.npy`` header of a LUT file (shape, order, dtype); the data is not read."""
    check_model_file(path)
    try:
        with open(path, "rb") as f:
            return read_npy_header(f, str(path))
    except OSError as e:
        raise BundleError(f"{path}: cannot read LUT ({e.strerror or e})") from None


def _read_int8(path: Path, entries: int | None = None) -> np.ndarray:
    """An int8 LUT file, its header checked before its data is read: dtype int8, at least one
    dimension, ``entries`` values when given, at most ``MAX_LUT_BYTES``."""
    shape, fortran, dtype = _read_header(path)
    if dtype != np.int8:
        raise BundleError(f"{path}: expected an int8 array, got {dtype}")
    if len(shape) == 0:
        raise BundleError(f"{path}: holds a single number (a 0-d array), not a LUT")
    size = int(np.prod(shape, dtype=np.int64))
    if entries is not None and size != entries:
        raise BundleError(f"{path}: has {size} entries (shape {shape}), expected {entries}")
    if size > MAX_LUT_BYTES:
        raise BundleError(f"{path}: {size} entries is more than a LUT file may hold "
                          f"({MAX_LUT_BYTES // 2 ** 20} MB)")
    try:
        with open(path, "rb") as f:
            read_npy_header(f, str(path))
            return read_npy_data(f, shape, fortran, dtype, str(path))
    except OSError as e:
        raise BundleError(f"{path}: cannot read LUT ({e.strerror or e})") from None


def import_mulut_folder(folder) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """A folder of MuLUT files ``LUT*_x{s}_{b}bit_int8_s{stage}_{mode}.npy``: MuLUT-SDY-X2, so
    stages 1 and 2, each with modes s, d and y. A missing file is named in the error (a folder
    with five files is not silently a smaller model)."""
    folder = Path(folder)
    found: dict[tuple[int, str], Path] = {}
    scales, bits, prefixes = set(), set(), set()
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise BundleError(f"{folder}: cannot list the LUT folder ({e.strerror or e})") from None
    for f in entries:
        m = _MULUT_NAME.match(f.name)
        if not m:
            continue
        scales.add(int(m[1]))
        bits.add(int(m[2]))
        prefixes.add(f.name[: m.start(3) - 2])  # up to "_s{stage}_{mode}.npy"
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
        raise BundleError(f"{folder}: LUT files disagree on scale {sorted(scales)} or bits "
                          f"{sorted(bits)}")
    scale, nbits = scales.pop(), bits.pop()
    if not 1 <= nbits <= 8:
        raise BundleError(f"{folder}: {nbits}-bit LUTs are not supported (1 to 8 bits)")
    extra_stages = sorted({s for s, _ in found} - set(MULUT_STAGES))
    if extra_stages:
        f = next(p for (s, _), p in sorted(found.items()) if s == extra_stages[0])
        raise BundleError(f"{f}: unexpected stage {extra_stages[0]}; a MuLUT folder holds "
                          "stages 1 and 2")
    prefix = sorted(prefixes)[0]
    for sid in MULUT_STAGES:
        for m in "sdy":
            if (sid, m) not in found:
                raise BundleError(f"{folder}: missing {prefix}_s{sid}_{m}.npy (a MuLUT folder "
                                  "holds six LUT files: stages 1 and 2, modes s, d and y)")
    try:
        spec = ModelSpec(name=f"MuLUT ({folder.name})"[:200], scale=scale,
                         interval=2 ** (8 - nbits),
                         stages=tuple(Stage(tuple(Branch(_MULUT_MODES[m]) for m in "sdy"))
                                      for _ in MULUT_STAGES),
                         extra={"imported_from": "MuLUT LUT files"})
    except SpecError as e:
        raise BundleError(f"{folder}: {e}") from None
    arrays = {}
    for name, (shape, _) in spec.expected_arrays().items():
        si, bi = int(name[1]) - 1, int(name[4]) - 1
        arrays[name] = _read_int8(found[(MULUT_STAGES[si], "sdy"[bi])], shape[0] * shape[1])
    _reshape_to_spec(spec, arrays, folder)
    return spec, arrays


def import_srlut_file(path) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """One SR-LUT x{s} LUT (S pattern, one stage), e.g. ``Model_S_x4_4bit_int8.npy``.

    Scale and interval come from the name, or else from the shape (rows = levels**4 in the
    first dimension, scale**2 outputs in the others); the header is checked before any data is
    read."""
    path = Path(path)
    shape, _, _ = _read_header(path)
    if len(shape) == 0:
        raise BundleError(f"{path}: holds a single number (a 0-d array), not a LUT")
    m = _SRLUT_NAME.search(path.name)
    if m:
        scale, nbits = int(m[1]), int(m[2])
        if not 1 <= nbits <= 8:
            raise BundleError(f"{path}: {nbits}-bit LUTs are not supported (1 to 8 bits)")
        interval = 2 ** (8 - nbits)
    else:  # infer from the shape: rows = levels**4, columns = scale**2
        if len(shape) < 2:
            raise BundleError(f"{path}: cannot tell scale and interval from shape {shape}; "
                              "name it like LUT_x4_4bit_int8.npy")
        rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
        levels, scale = round(rows ** 0.25), round(cols ** 0.5)
        if (levels < 2 or levels ** 4 != rows or 256 % (levels - 1)
                or scale < 1 or scale ** 2 != cols):
            raise BundleError(f"{path}: cannot tell scale and interval from shape {shape}; "
                              "name it like LUT_x4_4bit_int8.npy")
        interval = 256 // (levels - 1)
    try:
        spec = ModelSpec(name=f"SR-LUT ({path.stem})"[:200], scale=scale, interval=interval,
                         stages=(Stage((Branch("S"),)),),
                         extra={"imported_from": SRLUT_SOURCE})
    except SpecError as e:
        raise BundleError(f"{path}: {e}") from None
    (rows, outs), _ = spec.expected_arrays()[f"{array_key(0, 0)}_lut"]
    arrays = {f"{array_key(0, 0)}_lut": _read_int8(path, rows * outs)}
    _reshape_to_spec(spec, arrays, path)
    return spec, arrays


def _reshape_to_spec(spec: ModelSpec, arrays: dict[str, np.ndarray], where) -> None:
    """Published LUTs come in assorted shapes (N, 1, 4, 4), (N, 16), ...: flatten to (rows, out)."""
    for name, (shape, _) in spec.expected_arrays().items():
        a = arrays[name]
        if a.size != shape[0] * shape[1]:
            raise BundleError(f"{where}: {name} has {a.size} entries, expected "
                              f"{shape[0]} x {shape[1]} "
                              f"for x{spec.scale} at interval {spec.interval}")
        arrays[name] = np.ascontiguousarray(a.reshape(shape))

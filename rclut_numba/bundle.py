"""The LUT bundle: the one file shared by training and deployment.

A bundle is a zip (``.npz``) holding ``spec.json`` (a :class:`ModelSpec`) and one ``.npy`` member
per table, named by :meth:`ModelSpec.expected_arrays`, except that an RC window table whose
rows fit :mod:`rclut_numba.rc_storage`'s packing is stored as three members (``_rc_centre``,
``_rc_codes``, ``_rc_shifts``) and unpacked on load.  Arrays are read with
``allow_pickle=False`` and checked against the spec before anything runs.
"""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np

from .fileio import atomic_write
from .rc_storage import pack_rc_table, packed_nbytes, unpack_rc_table
from .spec import ModelSpec, SpecError, array_key

SPEC_MEMBER = "spec.json"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


def validate_arrays(spec: ModelSpec, arrays: dict[str, np.ndarray], where: str = "bundle") -> None:
    expected = spec.expected_arrays()
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise BundleError(f"{where}: missing array {missing[0]!r}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise BundleError(f"{where}: array {unexpected[0]!r} is not part of spec '{spec.name}'")
    for name, (shape, dtype) in expected.items():
        a = arrays[name]
        if not isinstance(a, np.ndarray):
            raise BundleError(f"{where}: {name!r} is not an array")
        if a.dtype != np.dtype(dtype):
            raise BundleError(f"{where}: {name!r} has dtype {a.dtype}, expected {dtype}")
        if a.shape != shape:
            raise BundleError(f"{where}: {name!r} has shape {a.shape}, expected {shape} "
                              f"for spec '{spec.name}'")
        if name.endswith("_rc_thresholds") and np.any(np.diff(a) < 0):
            raise BundleError(f"{where}: {name!r} must be sorted ascending")


PACKED_PARTS = ("_rc_centre", "_rc_codes", "_rc_shifts")


def stored_arrays(spec: ModelSpec, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The members a bundle holds for ``arrays``: RC tables packed where that is exact."""
    out = {}
    for name in spec.expected_arrays():
        packed = pack_rc_table(arrays[name]) if name.endswith("_rc_table") else None
        if packed is None:
            out[name] = arrays[name]
        else:
            key = name[: -len("_rc_table")]
            out.update({key + part: a for part, a in zip(PACKED_PARTS, packed)})
    return out


def _unpack_members(spec: ModelSpec, arrays: dict[str, np.ndarray], where: str) -> None:
    """Replace packed RC members by the ``_rc_table`` they encode (in place)."""
    for si, bi, br in spec.branches():
        if not br.rc:
            continue
        key = array_key(si, bi)
        names = [key + part for part in PACKED_PARTS]
        present = [n for n in names if n in arrays]
        if not present:
            continue
        if len(present) < 3:
            missing = sorted(set(names) - set(present))[0]
            raise BundleError(f"{where}: missing array {missing!r}")
        if f"{key}_rc_table" in arrays:
            raise BundleError(f"{where}: {key!r} holds its RC table both packed and unpacked")
        n2 = br.rc * br.rc
        centre, codes, shifts = (arrays.pop(n) for n in names)
        for name, a, shape, dtype in ((names[0], centre, (256,), "int16"),
                                      (names[1], codes, (n2 - 1, 256), "int8"),
                                      (names[2], shifts, (n2 - 1,), "uint8")):
            if a.dtype != np.dtype(dtype) or a.shape != shape:
                raise BundleError(f"{where}: {name!r} must be {dtype} of shape {shape}, "
                                  f"got {a.dtype} {a.shape}")
        try:
            arrays[f"{key}_rc_table"] = unpack_rc_table(centre, codes, shifts)
        except ValueError as e:
            raise BundleError(f"{where}: {key!r}: {e}") from None


def save_bundle(path, spec: ModelSpec, arrays: dict[str, np.ndarray], force: bool = False) -> Path:
    """Write atomically (temporary file, then rename); refuse to overwrite unless ``force``."""
    path = Path(path)
    validate_arrays(spec, arrays, where=str(path))
    if path.exists() and not force:
        raise BundleError(f"{path} exists; use --force to overwrite")
    if not path.parent.is_dir():
        raise BundleError(f"output folder {path.parent} does not exist")
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(SPEC_MEMBER, spec.to_json())
        members = stored_arrays(spec, arrays)
        for name in sorted(members):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(members[name]),
                                      allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())
    return path


def load_bundle(path) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if SPEC_MEMBER not in names:
                raise BundleError(f"{path}: not a model bundle (no {SPEC_MEMBER})")
            try:
                spec = ModelSpec.from_json(zf.read(SPEC_MEMBER).decode("utf-8"))
            except (SpecError, UnicodeDecodeError) as e:
                raise BundleError(f"{path}: bad spec: {e}") from None
            arrays = {}
            for member in names:
                if member == SPEC_MEMBER:
                    continue
                if not member.endswith(".npy"):
                    raise BundleError(f"{path}: unexpected member {member!r}")
                with zf.open(member) as f:
                    try:
                        arrays[member[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
                    except ValueError as e:
                        if "pickle" in str(e) or "Object arrays" in str(e):
                            raise BundleError(f"{path}: {member!r} is an object array; "
                                              "bundles hold integer arrays only") from None
                        raise BundleError(f"{path}: {member!r} is not a valid array: {e}") from None
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
        raise BundleError(f"{path}: unreadable or truncated bundle ({e})") from None
    except (RuntimeError, NotImplementedError) as e:  # e.g. a corrupted member's CRC
        raise BundleError(f"{path}: corrupted bundle ({e})") from None
    _unpack_members(spec, arrays, str(path))
    validate_arrays(spec, arrays, where=str(path))
    return spec, arrays


def bundle_size_kb(spec: ModelSpec, arrays: dict[str, np.ndarray] | None = None) -> float:
    """Storage of every table as the bundle holds it, in KB (1024 bytes); the papers count 4D
    LUTs only. Without ``arrays``: what the spec's tables take with every RC table packed (as
    the transfer writes them), from the spec alone."""
    if arrays is not None:
        return sum(a.nbytes for a in stored_arrays(spec, arrays).values()) / 1024.0
    total = 0
    for name, (shape, dtype) in spec.expected_arrays().items():
        if name.endswith("_rc_table"):
            total += packed_nbytes(shape[0])
        else:
            total += math.prod(shape) * np.dtype(dtype).itemsize
    return total / 1024.0


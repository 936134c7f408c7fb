"""The LUT bundle: the one file shared by training and deployment.

A bundle is a zip (``.npz``) holding ``spec.json`` (a :class:`ModelSpec`) and one ``.npy`` member
per table, named by :meth:`ModelSpec.expected_arrays`, except that an RC window table whose
rows fit :mod:`rclut_numba.rc_storage`'s packing is stored as three members (``_rc_centre``,
``_rc_codes``, ``_rc_shifts``) and unpacked on load.  Loading trusts nothing in the file: the
spec is read first (at most 64 KB) and validated, then every member's declared size and ``.npy``
header (dtype, shape) are checked against it before its data is read; object arrays are refused
from their header, so nothing is ever unpickled.
"""
from __future__ import annotations

import io
import math
import os
import stat
import zipfile
import zlib
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
            out.update({key + part: a for part, a in zip(PACKED_PARTS, packed, strict=True)})
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


# Limits on what a bundle may ask for before anything is read. Every published or trained
# model is below 10 MB; an SR-LUT at interval 4, x4 (65**4 rows x 16 outputs) is 286 MB.
# Anything bigger is refused before a byte of it is inflated.
MAX_SPEC_BYTES = 64 * 1024
MAX_NPY_HEADER_BYTES = 4096  # numpy writes 64- or 128-byte headers for these arrays
MAX_MODEL_BYTES = 512 * 1024 * 1024


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def read_npy_header(f, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``f``, reading only its header.

    Object (pickled) arrays and anything but a plain numeric dtype are refused here, before the
    data is touched."""
    fmt = np.lib.format
    try:
        major, _minor = fmt.read_magic(f)
        if major == 1:
            read_header = fmt.read_array_header_1_0
        elif major in (2, 3):
            read_header = fmt.read_array_header_2_0
        else:
            raise ValueError(f"unsupported .npy format version {major}")
        shape, fortran, dtype = read_header(f, max_header_size=MAX_NPY_HEADER_BYTES)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise BundleError(f"{where}: not a valid .npy array ({' '.join(str(e).split())})") from None
    if dtype.hasobject:
        raise BundleError(f"{where}: is an object array; bundles hold integer arrays only")
    if dtype.kind not in "iu" or dtype.fields is not None or dtype.subdtype is not None:
        raise BundleError(f"{where}: has dtype {dtype}; bundles hold integer arrays only")
    return tuple(int(n) for n in shape), bool(fortran), dtype


def read_npy_data(f, shape: tuple[int, ...], fortran: bool, dtype: np.dtype,
                  where: str) -> np.ndarray:
    """The data after :func:`read_npy_header`: exactly ``prod(shape)`` items, read in chunks
    into one buffer (no second copy), refused if the stream ends early or goes on."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = bytearray(nbytes)
    view = memoryview(buf)
    pos = 0
    while pos < nbytes:
        chunk = f.read(min(nbytes - pos, 1 << 20))
        if not chunk:
            raise BundleError(f"{where}: truncated array ({pos} of {nbytes} bytes)")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    if f.read(1):
        raise BundleError(f"{where}: holds data past the end of its {shape} array")
    a = np.frombuffer(buf, dtype=dtype)
    return a.reshape(shape, order="F" if fortran else "C")


def _member_plan(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every member a bundle of ``spec`` may hold: its tables and the packed RC parts."""
    plan = dict(spec.expected_arrays())
    for si, bi, br in spec.branches():
        if br.rc:
            key = array_key(si, bi)
            n2 = br.rc * br.rc
            plan[key + "_rc_centre"] = ((256,), "int16")
            plan[key + "_rc_codes"] = ((n2 - 1, 256), "int8")
            plan[key + "_rc_shifts"] = ((n2 - 1,), "uint8")
    return plan


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _read_bundle(zf: zipfile.ZipFile, where: str) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise BundleError(f"{where}: member {dup!r} appears twice")
    by_name = {i.filename: i for i in infos}
    if SPEC_MEMBER not in by_name:
        raise BundleError(f"{where}: not a model bundle (no {SPEC_MEMBER})")
    spec_info = by_name[SPEC_MEMBER]
    if spec_info.file_size > MAX_SPEC_BYTES:
        raise BundleError(f"{where}: {SPEC_MEMBER} declares {_mb(spec_info.file_size)}; "
                          f"a spec is at most {MAX_SPEC_BYTES // 1024} KB")
    with zf.open(spec_info) as f:
        raw = f.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise BundleError(f"{where}: {SPEC_MEMBER} is larger than {MAX_SPEC_BYTES // 1024} KB")
    try:
        spec = ModelSpec.from_json(raw.decode("utf-8"))
    except (SpecError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"{where}: bad spec: {e}") from None

    plan = _member_plan(spec)
    total = sum(_nbytes(*plan[n]) for n in spec.expected_arrays())
    if total > MAX_MODEL_BYTES:
        raise BundleError(f"{where}: spec '{spec.name}' asks for {_mb(total)} of tables, more than "
                          f"the {MAX_MODEL_BYTES // 2 ** 20} MB a bundle may hold")
    # Every member is checked against the spec from the zip directory alone, before any is read.
    members = []
    for info in infos:
        if info.filename == SPEC_MEMBER:
            continue
        member = info.filename
        if not member.endswith(".npy"):
            raise BundleError(f"{where}: unexpected member {member!r}")
        name = member[:-4]
        if name not in plan:
            raise BundleError(f"{where}: array {name!r} is not part of spec '{spec.name}'")
        shape, dtype = plan[name]
        limit = MAX_NPY_HEADER_BYTES + _nbytes(shape, dtype)
        if info.file_size > limit:
            raise BundleError(f"{where}: {member!r} declares {_mb(info.file_size)}, more than "
                              f"the {_mb(limit)} that shape {shape} ({dtype}) needs "
                              f"(spec '{spec.name}')")
        members.append((info, name, shape, dtype))
    arrays = {}
    for info, name, shape, dtype in members:
        with zf.open(info) as f:
            got_shape, fortran, got_dtype = read_npy_header(f, f"{where}: {info.filename!r}")
            if got_dtype != np.dtype(dtype):
                raise BundleError(f"{where}: {name!r} has dtype {got_dtype}, expected {dtype}")
            if got_shape != shape:
                raise BundleError(f"{where}: {name!r} has shape {got_shape}, expected {shape} "
                                  f"for spec '{spec.name}'")
            arrays[name] = read_npy_data(f, shape, fortran, got_dtype,
                                         f"{where}: {info.filename!r}")
    return spec, arrays


def load_bundle(path) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read and validate a bundle. The spec is read first (at most ``MAX_SPEC_BYTES``); every
    member's declared size and ``.npy`` header are checked against it before its data is read,
    so a crafted file is refused in bounded memory with a one-line :class:`BundleError`."""
    path = Path(path)
    check_model_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            spec, arrays = _read_bundle(zf, str(path))
    except zipfile.BadZipFile as e:
        what = "corrupted" if "CRC" in str(e) else "unreadable or truncated"
        raise BundleError(f"{path}: {what} bundle ({' '.join(str(e).split())})") from None
    except (EOFError, OSError, zipfile.LargeZipFile) as e:
        raise BundleError(f"{path}: unreadable or truncated bundle ({e})") from None
    except (RuntimeError, NotImplementedError, zlib.error) as e:  # e.g. encryption, bad deflate
        raise BundleError(f"{path}: corrupted bundle ({' '.join(str(e).split())})") from None
    _unpack_members(spec, arrays, str(path))
    validate_arrays(spec, arrays, where=str(path))
    return spec, arrays


def check_model_file(path: Path) -> os.stat_result:
    """The ``stat`` of a model file, or a :class:`BundleError` if it is missing or not a regular
    file (a FIFO, a device, a symlink loop)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such model file") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read model ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path}: not a regular file, not a model")
    return st


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


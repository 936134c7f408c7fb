"""The LUT bundle: the one file shared by training and deployment.

A bundle is a zip (``.npz``) holding ``spec.json`` (a :class:`ModelSpec`) and one ``.npy`` member
per table, named by :meth:`ModelSpec.expected_arrays`.  Arrays are read with
``allow_pickle=False`` and checked against the spec before anything runs.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .spec import ModelSpec, SpecError

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


def save_bundle(path, spec: ModelSpec, arrays: dict[str, np.ndarray], force: bool = False) -> Path:
    """Write atomically (temporary file, then rename); refuse to overwrite unless ``force``."""
    path = Path(path)
    validate_arrays(spec, arrays, where=str(path))
    if path.exists() and not force:
        raise BundleError(f"{path} exists; use --force to overwrite")
    if not path.parent.is_dir():
        raise BundleError(f"output folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(SPEC_MEMBER, spec.to_json())
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                zf.writestr(f"{name}.npy", buf.getvalue())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a model file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
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
    validate_arrays(spec, arrays, where=str(path))
    return spec, arrays


def bundle_size_kb(spec: ModelSpec, arrays: dict[str, np.ndarray]) -> float:
    """Storage of every table in the bundle, in KB (1024 bytes); the papers count 4D LUTs only."""
    return sum(arrays[n].nbytes for n in spec.expected_arrays()) / 1024.0


"""rclut_numba.fileio.atomic_write: all or nothing, umask permissions, no temporary left."""
from __future__ import annotations

import os
import sys

import pytest

from rclut_numba.fileio import atomic_write


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_bytes_and_text(tmp_path):
    with atomic_write(tmp_path / "a.bin") as f:
        f.write(b"\x00\x01")
    with atomic_write(tmp_path / "b.txt", "w") as f:
        f.write("line\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text() == "line\n"
    assert names(tmp_path) == ["a.bin", "b.txt"]


def test_temporary_file_is_beside_the_target_and_hidden_until_the_end(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    with atomic_write(tmp_path / "a.bin") as f:
        f.write(b"new")
        f.flush()
        others = [n for n in names(tmp_path) if n != "a.bin"]
        assert len(others) == 1 and others[0].startswith(".a.bin.") and others[0].endswith(".tmp")
        assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert names(tmp_path) == ["a.bin"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_exception_leaves_the_target_as_it_was(tmp_path, error):
    (tmp_path / "a.bin").write_bytes(b"old")
    with pytest.raises(error):
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"half")
            raise error("stop")
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert names(tmp_path) == ["a.bin"]
    with pytest.raises(error):
        with atomic_write(tmp_path / "new.bin") as f:
            raise error("stop")
    assert names(tmp_path) == ["a.bin"]


def test_missing_folder_and_bad_mode(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "nope" / "a.bin"):
            pass
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "a.bin", "ab"):
            pass
    assert names(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_published_file_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == mode

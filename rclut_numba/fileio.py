"""Atomic file writes: the one way this project publishes a file.

A writer gets a temporary file in the target's own folder (so that the final rename never
crosses a file system); when the ``with`` block ends cleanly the data is flushed and synced to
disk, and the temporary file is renamed onto the target with :func:`os.replace`. A reader
therefore sees the old file or the new one, never half of one. On any exception, including
``KeyboardInterrupt``, the temporary file is removed and the target is left as it was.

The temporary file is created with mode ``0o666`` and ``O_EXCL``, so the published file has the
usual umask-based permissions (``tempfile.mkstemp`` would leave it at ``0600``) and two writers
never share a temporary file.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _new_temp(folder: Path, name: str) -> tuple[Path, int]:
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return tmp, os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Yield a file open for writing that replaces ``path`` only if the block succeeds.

    ``mode`` is ``"wb"`` (the default) or ``"w"`` (text, with ``encoding``, UTF-8 unless
    given). The folder of ``path`` must exist. Raising inside the block, for example after a
    last check that the target may still be overwritten, abandons the write.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp, fd = _new_temp(path.parent, path.name)
    try:
        if mode == "w":
            fh = os.fdopen(fd, "w", encoding=encoding or "utf-8")
        else:
            fh = os.fdopen(fd, "wb")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

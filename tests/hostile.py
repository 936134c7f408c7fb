"""Builders for hostile files, small on disk, written by hand so nothing large is committed.

* :func:`write_zip`: a zip whose members may be deflate bombs (a long run of one byte value,
  compressed once and repeated) or may declare a size other than what they hold;
* :func:`png_header_only`: a PNG whose IHDR claims any size, with a tiny valid IDAT;
* :func:`run_python`: run code in a fresh interpreter and report its peak RSS.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 24  # 16 MiB of one byte value per repeated deflate block


@dataclass
class Bomb:
    """``size`` bytes of ``fill`` after ``head``, deflated as repeated identical blocks."""
    size: int
    fill: bytes = b"\0"
    head: bytes = b""


def _deflate_bomb(bomb: Bomb) -> tuple[bytes, int]:
    """(raw deflate stream, crc32) of ``bomb`` in O(16 MiB) memory and a few MB of output."""
    body = bomb.size - len(bomb.head)
    n_blocks, tail = divmod(body, _CHUNK)
    block = bomb.fill * _CHUNK
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [c.compress(bomb.head) + c.flush(zlib.Z_FULL_FLUSH)]
    # after a full flush the compressor forgets the past, so one block's output repeats exactly
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    parts.append(one * n_blocks)
    parts.append(c.compress(bomb.fill * tail) + c.flush(zlib.Z_FINISH))
    crc = zlib.crc32(bomb.head)
    for _ in range(n_blocks):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(bomb.fill * tail, crc)
    return b"".join(parts), crc


def write_zip(path, members: dict[str, bytes | Bomb], declared: dict[str, int] | None = None):
    """A zip (deflate) of ``members``; ``declared`` overrides a member's stated size."""
    declared = declared or {}
    local, central, offset = [], [], 0
    for name, content in members.items():
        if isinstance(content, Bomb):
            data, crc = _deflate_bomb(content)
            size = content.size
        else:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = c.compress(content) + c.flush()
            crc, size = zlib.crc32(content), len(content)
        size = declared.get(name, size)
        raw = name.encode()
        head = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size,
                           len(raw), 0)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc,
                                   len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        local.append(head + raw + data)
        offset += len(head) + len(raw) + len(data)
    cd = b"".join(central)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(cd),
                       offset, 0)
    Path(path).write_bytes(b"".join(local) + cd + eocd)


def npy_bytes(shape, descr: str = "|i1", data: bytes | None = None) -> bytes:
    """A ``.npy`` file whose header claims ``shape`` (the data may be anything, or nothing)."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    out = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")
    return out + (data or b"")


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + ctype + payload
            + struct.pack(">I", zlib.crc32(ctype + payload)))


def png_bytes(width: int, height: int, depth: int = 8, colour: int = 2,
              rows: list[bytes] | None = None) -> bytes:
    """A PNG with this IHDR. ``rows`` (filter byte added here) default to one zero row: enough
    for any header check, far too little to decode a big image."""
    rows = rows if rows is not None else [b"\0"]
    raw = b"".join(b"\0" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def png_bomb(path, width: int, height: int) -> None:
    """A valid 8-bit gray PNG of ``width`` x ``height`` zeros, a few hundred KB on disk."""
    row = b"\0" * (width + 1)  # filter byte + pixels
    c = zlib.compressobj(9)
    parts = [c.compress(row * min(height, 64)) + c.flush(zlib.Z_FULL_FLUSH)]
    one = c.compress(row * 64) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(height - min(height, 64), 64)
    parts.append(one * full)
    parts.append(c.compress(row * rest) + c.flush(zlib.Z_FINISH))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                           + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


@dataclass
class Run:
    rc: int
    out: str
    err: str
    peak_mb: float


def run_python(code: str, *args: str, timeout: float = 120) -> Run:
    """Run ``code`` (``sys.argv[1:]`` = ``args``) in a new interpreter; its own peak RSS is
    reported by the child itself from VmHWM, the high-water mark of its own address space.
    (``ru_maxrss`` would not do: Linux carries the pre-exec mm's peak across ``exec``, so a
    child spawned from a 700 MB pytest process reported 700 MB whatever it did.)"""
    wrapped = ("import atexit, sys\n"
               "def _peak_kb():\n"
               "    for line in open('/proc/self/status'):\n"
               "        if line.startswith('VmHWM:'):\n"
               "            return int(line.split()[1])\n"
               "    import resource\n"
               "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
               "atexit.register(lambda: sys.__stderr__.write('\\nPEAK_KB %d\\n' % _peak_kb()))\n"
               + textwrap.dedent(code))
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", wrapped, *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    err, _, peak = p.stderr.rpartition("\nPEAK_KB ")
    return Run(p.returncode, p.stdout, err.strip(), int(peak.split()[0]) / 1024 if peak else -1.0)


CLI = "from rclut_numba.cli import main\nsys.exit(main(sys.argv[1:]))\n"

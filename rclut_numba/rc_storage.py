"""How a bundle stores RC window tables: the centre row in int16, the others as int8 codes
scaled by a power of two.

In memory an RC window is an int16 ``(N*N, 256)`` table (what the engine, the reference and
the torch LUT forward read).  The transfer scales it so that its largest row uses the whole
int16 range, and that row is the centre pixel's: the pixel the window's output belongs to.
The other rows are an order of magnitude smaller (in the default model at most 3582 against
65535 of span).  So a bundle keeps the centre row as it is and stores row ``p`` of the others
as ``codes[p] * 2**shifts[p]`` with int8 codes: 257 bytes a row instead of 512, and the RC
tables of the paper layout shrink from 83 KB to 43 KB.

Storage is exact: a table is packed only when every non-centre row already lies on its grid
(``pack_rc_table`` returns None otherwise and the bundle keeps the int16 table).
``project_rc_table`` puts a table on the grid; the transfer and LUT fine-tuning call it before
they write tables (on the default model it moves Set5 by -0.002 dB, Set14 by +0.0004 dB).
"""
from __future__ import annotations

import numpy as np

CODE_MAX = 127      # codes use -127..127, so a row's grid is symmetric about zero
MAX_SHIFT = 8       # 127 * 2**8 = 32512: every int16 row but a full-range one fits


def row_shift(row: np.ndarray) -> int:
    """The smallest ``k`` with ``max |row| <= 127 * 2**k`` (rows beyond 127 * 2**8 get 9)."""
    biggest = int(np.abs(row.astype(np.int64)).max(initial=0))
    k = 0
    while biggest > CODE_MAX << k:
        k += 1
    return k


def project_rc_table(table: np.ndarray) -> np.ndarray:
    """``table`` with every non-centre row rounded (half to even) to its ``2**k`` grid."""
    out = table.astype(np.int64)
    centre = table.shape[0] // 2
    for p in range(table.shape[0]):
        k = row_shift(out[p])
        if p != centre and 0 < k <= MAX_SHIFT:
            out[p] = np.round(out[p] / (1 << k)).astype(np.int64) << k
    return out.astype(np.int16)


def project_rc_tables(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of a bundle's arrays with every RC table projected (see ``project_rc_table``)."""
    return {name: project_rc_table(a) if name.endswith("_rc_table") else a
            for name, a in arrays.items()}


def pack_rc_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(centre int16 (256,), codes int8 (N*N-1, 256), shifts uint8 (N*N-1,))`` holding
    ``table`` exactly, or None when a non-centre row is off its grid."""
    t = table.astype(np.int64)
    centre = t.shape[0] // 2
    rows = np.delete(t, centre, axis=0)
    shifts = np.array([row_shift(r) for r in rows], dtype=np.int64)
    if shifts.size and shifts.max() > MAX_SHIFT:
        return None
    codes = rows >> shifts[:, None]  # floor division by 2**k; exact when on the grid
    if not np.array_equal(codes << shifts[:, None], rows):
        return None
    return t[centre].astype(np.int16), codes.astype(np.int8), shifts.astype(np.uint8)


def unpack_rc_table(centre: np.ndarray, codes: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The int16 ``(N*N, 256)`` table of packed arrays (validated by the caller's shapes);
    raises ValueError for a shift beyond ``MAX_SHIFT``."""
    if shifts.size and int(shifts.max()) > MAX_SHIFT:
        raise ValueError(f"RC row shift {int(shifts.max())} exceeds {MAX_SHIFT}")
    rows = codes.astype(np.int64) << shifts.astype(np.int64)[:, None]
    half = rows.shape[0] // 2
    table = np.concatenate([rows[:half], centre.astype(np.int64)[None], rows[half:]])
    return table.astype(np.int16)


def packed_nbytes(n_positions: int) -> int:
    """Bytes of a packed table with ``n_positions`` rows."""
    return 256 * 2 + (n_positions - 1) * (256 + 1)

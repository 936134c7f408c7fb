"""Network -> LUT bundle: sample every block on the spec's grid, tabulate every RC window.

* 4-input block: its MLP on all ``levels**4`` grid points (level k is pixel ``min(k*interval,
  255)``), stored ``int8(round(clamp(out, -1, 1) * 127))``; 1-input block: all 256 values.
* RC window: before its tanh the module is ``mean_p(a_p x_p / 255 + b_p)``, so window position p
  becomes a 256-entry table ``T[p, v] = round(F * a_p * (v / 255 - 1/2))`` in fixed point (F
  chosen so the largest entry just fits int16), and ``round((tanh(m) + 1) * 127.5) >= k``
  becomes ``sum_p T[p, v_p] >= thr[k]`` with ``thr[k] = ceil(F * (N^2 * atanh((k - 0.5) / 127.5
  - 1) - sum_p (b_p + a_p / 2)))``: an exact integer function of the window, the same in torch
  and numba.
* ``spread_rc``: an RC window's output can reach only part of 0..255 (the 3x3 window of the
  default model's stage 1 reaches 1..151), so its block's 4D table would meet the images at few
  of its 17 sample points a dimension.  With ``spread_rc`` the deployed RC level is
  ``round(alpha * U + beta)``, the reachable span of the unrounded output ``U`` stretched
  affinely onto 0..255 (folded into the thresholds), and the block is sampled at the inverse map
  ``(level - beta) / alpha``.  Engine, bundle and LUT forward are unchanged: only the numbers in
  the thresholds and tables differ.

:func:`write_transferred_bundle` does it for a run folder, a checkpoint or MuLUT weights and
writes the bundle (``rclut-train transfer`` and the pipeline's transfer stage both call it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from rclut_numba.bundle import bundle_size_kb, save_bundle
from rclut_numba.rc_storage import project_rc_tables
from rclut_numba.spec import ModelSpec, array_key

from .config import ConfigError, load_config
from .networks import Block, LUTNet, RCModule, load_mulut_npz
from .train import TrainError, build_model, load_checkpoint, model_from_checkpoint

RC_MAX_FRACTION_BITS = 20  # beyond this the thresholds would leave int32
NETWORK_LEVELS = (1.0, 0.0)  # RC level map (alpha, beta) that keeps the network's own levels


def grid_values(spec: ModelSpec) -> torch.Tensor:
    """Pixel values of the 4D LUT sample points: 0, interval, ..., 256 - interval, 255."""
    return torch.tensor([min(k * spec.interval, 255) for k in range(spec.levels)],
                        dtype=torch.float64)


@torch.no_grad()
def rc_level_map(rc: RCModule) -> tuple[float, float]:
    """``(alpha, beta)`` stretching the span the RC output ``U = (tanh(m) + 1) * 127.5`` can reach
    (over all windows of pixels 0..255) onto 0..255."""
    a, b = (t.double().cpu() for t in rc.affine())
    n2 = rc.window * rc.window
    lo, hi = (float((torch.tanh(m / n2) + 1.0) * 127.5)
              for m in (torch.minimum(b, a + b).sum(), torch.maximum(b, a + b).sum()))
    if hi - lo < 1.0:  # a (near) constant window: nothing to stretch
        return NETWORK_LEVELS
    alpha = 255.0 / (hi - lo)
    return alpha, -alpha * lo


@torch.no_grad()
def sample_block(block: Block, spec: ModelSpec, chunk: int = 1 << 16,
                 level_map: tuple[float, float] = NETWORK_LEVELS) -> np.ndarray:
    """(rows, outputs) int8 table of one block's MLP (its RC module excluded), its inputs read
    through the inverse of the RC ``level_map`` ``(alpha, beta)``."""
    if block.n_in == 1:
        inputs = torch.arange(256, dtype=torch.float64).unsqueeze(1)
    else:
        g = grid_values(spec)
        inputs = torch.cartesian_prod(g, g, g, g)  # row index a*L^3 + b*L^2 + c*L + d
    alpha, beta = level_map
    inputs = (inputs - beta) / alpha
    dtype = block.conv1.weight.dtype
    outs = [block.mlp((inputs[i:i + chunk] / 255.0).to(dtype))
            for i in range(0, len(inputs), chunk)]
    out = torch.cat(outs).double()
    return torch.round(torch.clamp(out, -1, 1) * 127).to(torch.int8).cpu().numpy()


@torch.no_grad()
def tabulate_rc(rc: RCModule, level_map: tuple[float, float] = NETWORK_LEVELS
                ) -> tuple[np.ndarray, np.ndarray]:
    """(N*N, 256) int16 window tables and the (255,) int32 thresholds of one RC module; the
    levels are ``round(alpha * U + beta)`` for ``level_map = (alpha, beta)``."""
    a, b = (t.double().cpu() for t in rc.affine())
    n2 = rc.window * rc.window
    values = torch.arange(256, dtype=torch.float64) / 255.0
    # each table is centred on zero (slope part only, offset a_p / 2 moved out) so int16 spends
    # its range on what varies; the constant parts go into the thresholds
    centred = a[:, None] * (values[None, :] - 0.5)  # (N*N, 256)
    constant = float((b + a / 2).sum())  # sum over positions of what the tables leave out
    biggest = float(centred.abs().max()) or 1.0
    fixed = min(2.0 ** RC_MAX_FRACTION_BITS, 32767 / biggest)  # the largest entry uses all 16 bits
    table = torch.round(centred * fixed)
    k = torch.arange(1, 256, dtype=torch.float64)
    # the RC index reaches k when alpha * (tanh(m) + 1) * 127.5 + beta >= k - 0.5, i.e.
    # m >= atanh(...), with N^2 * m = sum_p (table_p / fixed) + constant
    alpha, beta = level_map
    t = ((k - 0.5 - beta) / alpha) / 127.5 - 1.0
    thresholds = torch.ceil(fixed * (n2 * torch.atanh(t.clamp(-1.0, 1.0)) - constant))
    # t <= -1: always reached; t >= 1: never (atanh gives -inf / +inf, clamped to int32 below)
    thresholds = thresholds.clamp(-(2 ** 31), 2 ** 31 - 1)  # sums never get near these bounds
    return table.numpy().astype(np.int16), thresholds.numpy().astype(np.int32)


def transfer(net: LUTNet, spread_rc: bool = False) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """All tables of a trained network, named as the bundle names them (``spread_rc``: see the
    module docstring)."""
    spec = net.spec
    arrays = {}
    for si, bi, br in spec.branches():
        key = array_key(si, bi)
        block = net.blocks[key]
        level_map = rc_level_map(block.rc) if br.rc and spread_rc else NETWORK_LEVELS
        arrays[f"{key}_lut"] = sample_block(block, spec, level_map=level_map)
        if br.rc:
            table, thresholds = tabulate_rc(block.rc, level_map)
            arrays[f"{key}_rc_table"], arrays[f"{key}_rc_thresholds"] = table, thresholds
    return spec, arrays


def load_network(source, config=None, which: str = "best", ema: bool = False,
                 overrides: dict | None = None) -> tuple[LUTNet, Path]:
    """A LUTNet from a run folder, a checkpoint or published MuLUT weights (+ config), and the
    file it came from; ``ema``: the checkpoint's weight EMA (training/ema.py).  A ``config``
    (with ``overrides``, as ``--set``) given with a checkpoint must describe its model."""
    source = Path(source)
    if source.is_dir():
        candidates = [source / f"{which}.pt", source / "last.pt"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise TrainError(f"{source} holds no checkpoint ({which}.pt or last.pt)")
        source = found[0]
    if not source.is_file():
        raise TrainError(f"{source} does not exist")
    spec = cfg = None
    if config:
        spec, cfg = load_config(config, overrides)
    if source.suffix == ".npz":
        if ema:
            raise ConfigError(f"{source}: MuLUT weights have no EMA")
        if spec is None:
            raise ConfigError("--config is required with .npz weights")
        model = build_model(spec, cfg)
        load_mulut_npz(model, source)
        return model, source
    ck = load_checkpoint(source)
    try:
        model = model_from_checkpoint(ck, ema=ema)
    except TrainError as e:
        raise TrainError(f"{source}: {e}") from None
    if spec is not None and model.spec != spec:
        raise TrainError(f"{source} holds {model.spec.describe()}, but {config} describes "
                         f"{spec.describe()}")
    return model, source


def write_transferred_bundle(source, out, *, config=None, which="best", spread_rc=False,
                             ema=False, force=False, say=print) -> None:
    """Sample a network (run folder, checkpoint or MuLUT weights) into the bundle ``out``."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; use --force to overwrite")
    model, source = load_network(source, config, which, ema=ema)
    spec, arrays = transfer(model.eval(), spread_rc=spread_rc)
    # RC rows onto the bundle's packed grid (rclut_numba.rc_storage): 40 KB less, ~0.002 dB
    arrays = project_rc_tables(arrays)
    spec = dataclasses.replace(spec, extra={**spec.extra, "transferred_from": str(source),
                                            "weights": "ema" if ema else "network",
                                            "spread_rc": bool(spread_rc)})
    save_bundle(out, spec, arrays, force=force)
    say(f"wrote {out}: {spec.describe()}, {bundle_size_kb(spec, arrays):.1f} KB of tables")

"""The engine's LUT arithmetic in torch, differentiable in the table entries.

Forward values are exactly the engine's (tests assert bit equality): table entries are rounded
to integers, every sum is of integer-valued floats far below 2**24, and each stage's rounding
is done on int64 tensors with the engine's round-half-to-even.  Gradients use straight-through
estimates:

* table entries: ``round`` passes the gradient unchanged (clamped to the int8 / int32 range);
* stage roundings: d(out)/d(acc) = 1 / divisor, as if no rounding happened;
* 4-simplex interpolation is piecewise linear in its inputs, so the gradient reaches the
  previous stage through the interpolation weights, as in MuLUT's LUT fine-tuning;
* a 1D LUT's gradient to its input is the table's central difference;
* an RC window's step function ``q = #{k : M >= thr[k]}`` is replaced in the backward pass by
  the secant through the neighbouring thresholds (dq/dM = 1 / threshold gap), and M's gradient
  to an input pixel by the table's central difference at that pixel.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rclut_numba.spec import PATTERN_OFFSETS, ModelSpec, array_key


def round_half_even_div(num: torch.Tensor, den: int) -> torch.Tensor:
    """round(num / den), ties to even, on int64 tensors (the engine's rule)."""
    q = torch.div(num, den, rounding_mode="floor")
    twice_rem = 2 * (num - q * den)
    return q + ((twice_rem > den) | ((twice_rem == den) & (q % 2 == 1))).long()


def _ste_round(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    q = torch.clamp(torch.round(t), lo, hi)
    return t + (q - t).detach()


def _exact_stage_output(acc: torch.Tensor, divisor: int, bias: int) -> torch.Tensor:
    """Engine rounding in the forward pass, d/d(acc) = 1/divisor in the backward pass."""
    exact = round_half_even_div(acc.detach().round().long() + bias * divisor, divisor).clamp(0, 255)
    smooth = acc / divisor + bias
    return smooth + (exact.to(acc.dtype) - smooth).detach()


class LutForward(nn.Module):
    """A bundle's tables as parameters; ``forward`` maps (N, 1, H, W) pixel values 0..255 to
    (N, 1, H*s, W*s), exactly as ``rclut_numba`` does for uint8 input."""

    def __init__(self, spec: ModelSpec, arrays: dict[str, np.ndarray], train_rc: bool = True):
        super().__init__()
        self.spec = spec
        self.luts = nn.ParameterDict()
        self.rc_tables = nn.ParameterDict()
        for si, bi, br in spec.branches():
            key = array_key(si, bi)
            self.luts[key] = nn.Parameter(torch.from_numpy(arrays[f"{key}_lut"].astype(np.float32)))
            if br.rc:
                # float64: int32 entries are not exact in float32
                table = torch.from_numpy(arrays[f"{key}_rc_table"].astype(np.float64))
                self.rc_tables[key] = nn.Parameter(table, requires_grad=train_rc)
                self.register_buffer(f"{key}_thr", torch.from_numpy(arrays[f"{key}_rc_thresholds"].copy()))

    # ---- export --------------------------------------------------------------------------
    def export_arrays(self) -> dict[str, np.ndarray]:
        """The tables as the engine stores them (rounded, clamped)."""
        out = {}
        for si, bi, br in self.spec.branches():
            key = array_key(si, bi)
            lut = torch.clamp(torch.round(self.luts[key].detach()), -128, 127)
            out[f"{key}_lut"] = lut.cpu().numpy().astype(np.int8)
            if br.rc:
                t = torch.clamp(torch.round(self.rc_tables[key].detach()), -2 ** 31, 2 ** 31 - 1)
                out[f"{key}_rc_table"] = t.cpu().numpy().astype(np.int32)
                out[f"{key}_rc_thresholds"] = getattr(self, f"{key}_thr").cpu().numpy().astype(np.int64)
        return out

    # ---- pieces --------------------------------------------------------------------------
    def _rc_map(self, key: str, n: int, x: torch.Tensor) -> torch.Tensor:
        """RC index map of a (rotated) image x; exact forward, secant gradient."""
        table = _ste_round(self.rc_tables[key], -2 ** 31, 2 ** 31 - 1)
        thr = getattr(self, f"{key}_thr")
        c = n // 2
        h, w = x.shape[-2:]
        xp = F.pad(x, (c, c, c, c), mode="replicate")
        total = torch.zeros_like(x, dtype=torch.float64)
        with torch.no_grad():
            levels = torch.arange(256, device=x.device)
            slope_table = (table[:, (levels + 1).clamp(max=255)] - table[:, (levels - 1).clamp(min=0)]) / 2
        for i in range(n):
            for j in range(n):
                p = n * i + j
                v = xp[..., i:i + h, j:j + w]
                idx = v.detach().round().long()
                total = total + table[p][idx] + slope_table[p][idx] * (v - v.detach()).double()
        exact_m = total.detach().round().long()
        q = torch.searchsorted(thr, exact_m.reshape(-1), right=True).reshape(exact_m.shape)
        k = q.clamp(1, thr.numel() - 1)
        gap = (thr[k] - thr[k - 1]).clamp(min=1).double()
        surrogate = total / gap
        return (q.double() + surrogate - surrogate.detach()).to(x.dtype)

    def _lookup(self, key: str, pattern: str, src: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, K, H, W): the branch's LUT applied at every anchor."""
        spec = self.spec
        lut = _ste_round(self.luts[key], -128, 127)
        offsets = PATTERN_OFFSETS[pattern]
        h, w = src.shape[-2:]
        e = max(max(dy, dx) for dy, dx in offsets)
        xp = F.pad(src, (0, e, 0, e), mode="replicate") if e else src
        vals = [xp[:, 0, dy:dy + h, dx:dx + w] for dy, dx in offsets]  # each (N, H, W)
        if len(vals) == 1:
            v = vals[0]
            idx = v.detach().round().long()
            # exact entry forward; backward to the input through the table's central difference
            with torch.no_grad():
                slope = (lut[(idx + 1).clamp(max=255)] - lut[(idx - 1).clamp(min=0)]) / 2
            out = lut[idx] + slope * (v - v.detach()).unsqueeze(-1)
            return (spec.interval * out).permute(0, 3, 1, 2)
        interval, levels = spec.interval, spec.levels
        v = torch.stack(vals)  # (4, N, H, W)
        lower = torch.div(v.detach().round().long(), interval, rounding_mode="floor")
        frac = v - (lower * interval).to(v.dtype)
        frac_sorted, order = torch.sort(frac, dim=0, descending=True, stable=True)
        strides = torch.tensor([levels ** 3, levels ** 2, levels, 1], device=v.device)
        index = (lower * strides.view(4, 1, 1, 1)).sum(0)
        f = [frac_sorted[t] for t in range(4)]
        weights = [interval - f[0], f[0] - f[1], f[1] - f[2], f[2] - f[3], f[3]]
        out = weights[0].unsqueeze(-1) * lut[index]
        for t in range(4):
            index = index + strides[order[t]]
            out = out + weights[t + 1].unsqueeze(-1) * lut[index]
        return out.permute(0, 3, 1, 2)  # (N, K, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        for si, stage in enumerate(spec.stages):
            last = si == len(spec.stages) - 1
            s = spec.scale if last else 1
            acc = None
            for bi, br in enumerate(stage.branches):
                key = array_key(si, bi)
                for r in range(4):
                    xr = torch.rot90(x, r, (2, 3))
                    src = self._rc_map(key, br.rc, xr) if br.rc else xr
                    out = self._lookup(key, br.pattern, src)
                    if s > 1:
                        out = F.pixel_shuffle(out, s)
                    out = torch.rot90(out, -r, (2, 3))
                    acc = out if acc is None else acc + out
            n = len(stage.branches)
            if last:
                x = _exact_stage_output(acc, spec.interval * n, 0)
            else:
                x = _exact_stage_output(acc, spec.interval * 4 * n, 127)
        return x

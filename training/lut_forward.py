"""The engine's LUT arithmetic in torch, differentiable in the table entries.

Forward values are exactly the engine's (tests assert bit equality): table entries are rounded
to integers, every sum is of integer-valued floats far below 2**24, and each stage's rounding
is done on int64 tensors with the engine's round-half-to-even.  Gradients use straight-through
estimates:

* table entries: ``round`` passes the gradient unchanged (clamped to the int8 / int16 range);
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

from rclut_numba.rc_storage import CODE_MAX, MAX_SHIFT, project_rc_table
from rclut_numba.spec import PATTERN_OFFSETS, ModelSpec, array_key


def round_half_even_div(num: torch.Tensor, den: int) -> torch.Tensor:
    """round(num / den), ties to even, on int64 tensors (the engine's rule)."""
    q = torch.div(num, den, rounding_mode="floor")
    twice_rem = 2 * (num - q * den)
    return q + ((twice_rem > den) | ((twice_rem == den) & (q % 2 == 1))).long()


def _ste_round(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    q = torch.clamp(torch.round(t), lo, hi)
    return t + (q - t).detach()


def _exact_stage_output(acc: torch.Tensor, divisor: int, bias) -> torch.Tensor:
    """Engine rounding in the forward pass, d/d(acc) = 1/divisor in the backward pass.

    ``bias`` is an integer, or (a residual last stage) an integer-valued tensor of acc's shape.
    """
    if isinstance(bias, torch.Tensor):
        offset = bias.detach().round().long() * divisor
    else:
        offset = bias * divisor
    exact = round_half_even_div(acc.detach().round().long() + offset, divisor).clamp(0, 255)
    smooth = acc / divisor + bias
    return smooth + (exact.to(acc.dtype) - smooth).detach()


def orient(x: torch.Tensor, o: int) -> torch.Tensor:
    """Orientation ``o`` of an (N, C, H, W) batch: rotation o, or for o >= 4 rotation o - 4 of
    its transpose (``rclut_numba.spec``'s orientation ensemble)."""
    return torch.rot90(x.transpose(2, 3) if o >= 4 else x, o % 4, (2, 3))


def unorient(x: torch.Tensor, o: int) -> torch.Tensor:
    """The inverse of :func:`orient`: a result in orientation ``o``'s frame, turned back."""
    back = torch.rot90(x, -(o % 4), (2, 3))
    return back.transpose(2, 3) if o >= 4 else back


def nearest_base(x: torch.Tensor, scale: int) -> torch.Tensor:
    """What a residual model's last stage adds: each input pixel over its s x s block."""
    return x.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def _ste_project_rows(table: torch.Tensor) -> torch.Tensor:
    """``rclut_numba.rc_storage.project_rc_table`` on an integer-valued (N*N, 256) table in the
    forward pass (non-centre rows rounded half to even onto their ``2**k`` grid), identity in
    the backward pass."""
    with torch.no_grad():
        biggest = table.abs().amax(1)
        k = sum((biggest > (CODE_MAX << j)).long() for j in range(MAX_SHIFT + 1))
        k[table.shape[0] // 2] = 0  # the centre row is stored as it is
        k = torch.where(k > MAX_SHIFT, 0, k)  # such a row is not packable: kept as it is
        step = torch.pow(2.0, k.to(table.dtype))[:, None]
        projected = torch.round(table / step) * step
    return table + (projected - table).detach()


def central_difference(rows: torch.Tensor) -> torch.Tensor:
    """d(entry)/d(index) of 256-entry tables (one per row), one-sided at the ends."""
    levels = torch.arange(256, device=rows.device)
    return (rows[:, (levels + 1).clamp(max=255)] - rows[:, (levels - 1).clamp(min=0)]) / 2


class _WindowSum(torch.autograd.Function):
    """M_i = sum_p T[p, v_ip] over an RC window (idx = v_ip + 256 p, flat into T).

    Gradients: to the table, the number of times each entry was read (weighted by dL/dM_i);
    to the pixels, the table's central difference at v_ip.  Written out because autograd's
    embedding_bag spent two thirds of an RC-LUT fine-tuning step on these few thousand
    entries; bincount does the table's gradient in one pass.
    """

    @staticmethod
    def forward(ctx, table, v, idx):  # table (n*n*256,) float64; v, idx (R, n*n)
        ctx.save_for_backward(table, idx)
        ctx.v_dtype = v.dtype
        return table[idx].sum(1)  # integer-valued float64: exact

    @staticmethod
    def backward(ctx, grad):
        table, idx = ctx.saved_tensors
        grad_table = grad_v = None
        if ctx.needs_input_grad[0]:
            weights = grad[:, None].expand(idx.shape).reshape(-1)
            grad_table = torch.bincount(idx.reshape(-1), weights=weights, minlength=table.numel())
            grad_table = grad_table.to(table.dtype)
        if ctx.needs_input_grad[1]:
            slope = central_difference(table.detach().reshape(-1, 256))
            grad_v = (slope.reshape(-1)[idx] * grad[:, None]).to(ctx.v_dtype)
        return grad_table, grad_v, None


class _WeightedGather(torch.autograd.Function):
    """out_i = sum_j w_ij * T[idx_ij] (rows of T): the simplex interpolation of a stage.

    The forward is embedding_bag's; the backward is written out because embedding_bag's dense
    table gradient sorts every index first: index_add_ accumulates the rows directly.
    """

    @staticmethod
    def forward(ctx, table, weights, idx):  # table (rows, D); weights, idx (M, 5)
        ctx.save_for_backward(table, weights, idx)
        return F.embedding_bag(idx, table, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad):  # grad (M, D)
        table, weights, idx = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            rows = (weights.unsqueeze(2) * grad.unsqueeze(1)).reshape(-1, grad.shape[1])
            grad_table = torch.zeros_like(table).index_add_(0, idx.reshape(-1), rows)
        if ctx.needs_input_grad[1]:
            grad_weights = torch.einsum("mjd,md->mj", table[idx], grad)
        return grad_table, grad_weights, None


class LutForward(nn.Module):
    """A bundle's tables as parameters; ``forward`` maps (N, 1, H, W) pixel values 0..255 to
    (N, 1, H*s, W*s), exactly as ``rclut_numba`` does for uint8 input.

    With ``project_rc`` the RC tables are read as :meth:`export_arrays` will store them
    (projected onto the packed grid), so that fine-tuning optimises the bundle it writes: off
    the grid an RC table's window sums, and so its codes, differ from the stored model's.
    """

    def __init__(self, spec: ModelSpec, arrays: dict[str, np.ndarray], train_rc: bool = True,
                 project_rc: bool = False):
        super().__init__()
        self.spec = spec
        self.project_rc = project_rc
        self.luts = nn.ParameterDict()
        self.rc_tables = nn.ParameterDict()
        for si, bi, br in spec.branches():
            key = array_key(si, bi)
            self.luts[key] = nn.Parameter(torch.from_numpy(arrays[f"{key}_lut"].astype(np.float32)))
            if br.rc:
                # float64 keeps window sums exact whatever their size
                table = torch.from_numpy(arrays[f"{key}_rc_table"].astype(np.float64))
                self.rc_tables[key] = nn.Parameter(table, requires_grad=train_rc)
                thresholds = arrays[f"{key}_rc_thresholds"].copy()
                self.register_buffer(f"{key}_thr", torch.from_numpy(thresholds))

    # ---- export --------------------------------------------------------------------------
    def export_arrays(self) -> dict[str, np.ndarray]:
        """The tables as the engine stores them (rounded, clamped; RC tables projected onto
        the bundle's packed grid, which leaves tables that were on it alone)."""
        out = {}
        for si, bi, br in self.spec.branches():
            key = array_key(si, bi)
            lut = torch.clamp(torch.round(self.luts[key].detach()), -128, 127)
            out[f"{key}_lut"] = lut.cpu().numpy().astype(np.int8)
            if br.rc:
                t = torch.clamp(torch.round(self.rc_tables[key].detach()), -32768, 32767)
                out[f"{key}_rc_table"] = project_rc_table(t.cpu().numpy().astype(np.int16))
                thresholds = getattr(self, f"{key}_thr").cpu().numpy()
                out[f"{key}_rc_thresholds"] = thresholds.astype(np.int32)
        return out

    # ---- pieces --------------------------------------------------------------------------
    def _rc_map(self, key: str, n: int, x: torch.Tensor) -> torch.Tensor:
        """RC index map of an (oriented) image x (N, 1, H, W); exact forward, secant gradient."""
        table = _ste_round(self.rc_tables[key], -32768, 32767)
        if self.project_rc:
            table = _ste_project_rows(table)
        table = table.reshape(-1)
        thr = getattr(self, f"{key}_thr")
        c = n // 2
        b, _, h, w = x.shape
        xp = F.pad(x, (c, c, c, c), mode="replicate") if c else x
        v = F.unfold(xp, n).transpose(1, 2).reshape(-1, n * n)  # (N*H*W, n*n), row p = n*i + j
        idx = v.detach().round().long() + 256 * torch.arange(n * n, device=x.device)
        total = _WindowSum.apply(table, v, idx)
        exact_m = total.detach().round().long()
        q = torch.searchsorted(thr, exact_m, right=True)
        k = q.clamp(1, thr.numel() - 1)
        gap = (thr[k] - thr[k - 1]).clamp(min=1).double()
        surrogate = total / gap
        q = q.double() + surrogate - surrogate.detach()
        return q.reshape(b, 1, h, w).to(x.dtype)

    def _bags(self, pattern: str, src: torch.Tensor, row_start: int):
        """Per anchor of src (N, 1, H, W): 5 LUT rows and their weights (M, 5), plus the 1D
        input-gradient term's inputs (None for 4D)."""
        spec = self.spec
        offsets = PATTERN_OFFSETS[pattern]
        h, w = src.shape[-2:]
        e = max(max(dy, dx) for dy, dx in offsets)
        xp = F.pad(src, (0, e, 0, e), mode="replicate") if e else src
        vals = [xp[:, 0, dy:dy + h, dx:dx + w].reshape(-1) for dy, dx in offsets]  # each (M,)
        if len(vals) == 1:
            v = vals[0]
            idx = (v.detach().round().long() + row_start).unsqueeze(1).expand(-1, 5)
            weights = torch.zeros(idx.shape, dtype=v.dtype, device=v.device)
            weights[:, 0] = spec.interval  # a 1D LUT is exact: one row, full weight
            return idx, weights, v
        interval, levels = spec.interval, spec.levels
        v = torch.stack(vals, 1)  # (M, 4)
        lower = torch.div(v.detach().round().long(), interval, rounding_mode="floor")
        frac = v - (lower * interval).to(v.dtype)
        f, order = torch.sort(frac, dim=1, descending=True, stable=True)
        strides = torch.tensor([levels ** 3, levels ** 2, levels, 1], device=v.device)
        base = (lower * strides).sum(1, keepdim=True) + row_start
        idx = torch.cat([base, base + torch.cumsum(strides[order], 1)], 1)  # the walk's 5 vertices
        weights = torch.cat([interval - f[:, :1], f[:, :-1] - f[:, 1:], f[:, 3:]], 1)
        return idx, weights, None

    def _stage_acc(self, si: int, x: torch.Tensor) -> torch.Tensor:
        """Exact sum over branches and orientations, in the image frame: (N, 1, H*s, W*s)."""
        spec = self.spec
        stage = spec.stages[si]
        s = spec.scale if si == len(spec.stages) - 1 else 1
        keys = [array_key(si, bi) for bi in range(len(stage.branches))]
        luts = [_ste_round(self.luts[k], -128, 127) for k in keys]
        table = torch.cat(luts) if len(luts) > 1 else luts[0]
        starts = np.cumsum([0] + [lut.shape[0] for lut in luts[:-1]])
        parts = []  # (orientation, shape, idx, weights, 1D input or None, branch)
        oriented = [orient(x, r) for r in range(spec.orientations)]  # shared by every branch
        for bi, br in enumerate(stage.branches):
            for r, xr in enumerate(oriented):
                src = self._rc_map(keys[bi], br.rc, xr) if br.rc else xr
                idx, wts, v1 = self._bags(br.pattern, src, int(starts[bi]))
                parts.append((r, xr.shape, idx, wts, v1, bi))
        # one fused weighted gather for the whole stage: sum_j w_j * table[idx_j]
        out = _WeightedGather.apply(table, torch.cat([p[3] for p in parts]).to(table.dtype),
                                    torch.cat([p[2] for p in parts]))
        acc = None
        # split (not slicing): its backward is one concatenation, not a zero-filled copy per part
        for (r, shape, idx, _, v1, bi), o in zip(parts, out.split([p[2].shape[0] for p in parts]),
                                                   strict=True):
            if v1 is not None:  # 1D LUT: gradient to its input via the table's central difference
                with torch.no_grad():
                    row = idx[:, 0]
                    lo = (row - 1).clamp(min=int(starts[bi]))
                    hi = (row + 1).clamp(max=int(starts[bi]) + 255)
                    slope = (table[hi] - table[lo]) / 2
                o = o + spec.interval * slope * (v1 - v1.detach()).unsqueeze(1)
            nb, _, h, w = shape
            o = o.reshape(nb, h, w, -1).permute(0, 3, 1, 2)
            if s > 1:
                o = F.pixel_shuffle(o, s)
            o = unorient(o, r)
            acc = o if acc is None else acc + o
        return acc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        image = x
        for si in range(len(spec.stages)):
            acc = self._stage_acc(si, x)
            divisor, bias = spec.stage_rescale(si)
            if spec.adds_input(si):
                bias = nearest_base(image, spec.scale)
            x = _exact_stage_output(acc, divisor, bias)
        return x

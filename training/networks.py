"""Trainable networks built from a :class:`rclut_numba.spec.ModelSpec`.

One class, :class:`LUTNet`, covers SR-LUT, MuLUT and RC-LUT: every branch of every stage is a
:class:`Block` (optional :class:`RCModule`, then a pattern read and a small dense MLP).  The
forward pass mirrors the deployed LUT arithmetic of ``rclut_numba`` (see ``spec.py``): each
rotation's output is ``round(127 * tanh)``, stage sums are re-quantised to 8 bit between
stages, and the last stage gives ``round(acc / branches)`` in pixel units.  Every ``round`` is
round-half-to-even with a straight-through gradient, so the values seen in training are the
integers the LUTs will hold and the transfer to LUTs loses little.

Tensor conventions: images are ``(B, 1, H, W)`` float tensors holding ``pixel / 255``; the
network returns ``(B, 1, scale*H, scale*W)`` pixel values (not clamped: clamp for display).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F

from rclut_numba.spec import PATTERN_OFFSETS, Branch, ModelSpec, array_key

from .config import PRECISIONS
from .dense_mlp import dense_mlp_bf16
from .lut_forward import nearest_base, orient, unorient

__all__ = ["PRECISIONS", "Block", "LUTNet", "RCModule", "WeightsError", "load_mulut_npz",
           "round_ste"]



class WeightsError(ValueError):
    """Weights that do not fit the network; the message says which array and why."""


class _RoundSTE(torch.autograd.Function):
    """round-half-to-even forward, identity backward.

    A custom Function (not ``x + (round(x) - x).detach()``) so that the forward value is the
    exact integer: the float sum trick can be off by one ulp, which would break the integer
    arithmetic shared with the LUT engine.
    """

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return _RoundSTE.apply(x)


class _WindowCorrelation(torch.autograd.Function):
    """``F.conv2d(xp, kernel)`` for one channel and a small odd kernel, with its backward as
    K*K shifted products of whole images.

    The forward is that conv2d, so values are unchanged.  oneDNN's backward of a one-channel
    conv is slow on CPU: its input gradient (a transposed convolution) took 60-140 ms per call
    for 128 images of 48x48 at 1 thread (3x3 .. 7x7 kernels), 5-30 times the forward, and about
    5 % of a default training step; the shifted products take a few ms."""

    @staticmethod
    def forward(ctx, xp, kernel):
        ctx.save_for_backward(xp, kernel)
        return F.conv2d(xp, kernel)

    @staticmethod
    def backward(ctx, grad):
        xp, kernel = ctx.saved_tensors
        k = kernel.shape[-1]
        h, w = grad.shape[-2:]
        shifts = [(i, j) for i in range(k) for j in range(k)]
        grad_xp = grad_kernel = None
        if ctx.needs_input_grad[0]:
            grad_xp = torch.zeros_like(xp)
            for (i, j), weight in zip(shifts, kernel.flatten().tolist(), strict=True):
                grad_xp[:, :, i:i + h, j:j + w].add_(grad, alpha=weight)
        if ctx.needs_input_grad[1]:
            grad_kernel = torch.stack([torch.sum(xp[:, :, i:i + h, j:j + w] * grad)
                                       for i, j in shifts]).view_as(kernel)
        return grad_xp, grad_kernel


class RCModule(nn.Module):
    """Reconstructed-convolution module (RC-LUT): N x N window -> one 8-bit index per pixel.

    Window position ``p = N*i + j`` (the pixel at offset ``(i - N//2, j - N//2)``) has its own
    ``Linear(1, C)`` then ``Linear(C, 1)``, with no nonlinearity between them, so each position
    is an affine map ``a_p * x + b_p`` of its pixel; this is what lets the deployed model store
    it as a 256-entry table per position.  The module outputs
    ``q = round((tanh(mean_p(a_p x_p + b_p)) + 1) * 127.5)`` in 0..255 (straight-through).

    Because the composition is affine, the fast path folds each position's two linears into
    ``(a_p, b_p)`` and evaluates the mean as one N x N convolution: identical values and
    gradients to unfolding the window and running the N*N linears, at a fraction of the cost.
    """

    def __init__(self, window: int, channels: int):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"RC window must be odd and >= 1, got {window}")
        self.window = window
        self.channels = channels
        n = window * window
        # Per-position parameters stacked over positions: w1[p] is Linear(1, C).weight[:, 0],
        # b1[p] its bias, w2[p] is Linear(C, 1).weight[0], b2[p] its bias.
        self.w1 = nn.Parameter(torch.empty(n, channels))
        self.b1 = nn.Parameter(torch.empty(n, channels))
        self.w2 = nn.Parameter(torch.empty(n, channels))
        self.b2 = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    # At initialisation the module passes its centre pixel through: q ~ 255 * sigmoid-like(x),
    # spanning most of 0..255.  With nn.Linear's default initialisation alone the window mean
    # moves by a few 8-bit levels over the whole pixel range, the quantised output is nearly
    # constant, and training stalls for hundreds of steps before the RC branches carry signal.
    CENTRE_GAIN = 3.0  # pre-tanh span over the pixel range 0..1: tanh(+-1.5) = +-0.9

    def reset_parameters(self):
        # nn.Linear's default initialisation, position by position (uniform +-1/sqrt(fan_in)),
        with torch.no_grad():
            self.w1.uniform_(-1.0, 1.0)
            self.b1.uniform_(-1.0, 1.0)
            bound = 1.0 / math.sqrt(self.channels)
            self.w2.uniform_(-bound, bound)
            self.b2.uniform_(-bound, bound)
            # ... then the centre position gets slope CENTRE_GAIN * N^2 (so the mean has slope
            # CENTRE_GAIN) and every position the offset -CENTRE_GAIN / 2.
            n = self.window * self.window
            centre = n // 2
            w2c = self.w2[centre]
            self.w1[centre] = w2c * (self.CENTRE_GAIN * n / w2c.dot(w2c))
            self.b2.copy_(-self.CENTRE_GAIN / 2 - (self.b1 * self.w2).sum(1))

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position slope and offset ``(a, b)``, each of shape ``(N*N,)``."""
        a = (self.w1 * self.w2).sum(1)
        b = (self.b1 * self.w2).sum(1) + self.b2
        return a, b

    def mean_response(self, x: torch.Tensor) -> torch.Tensor:
        """``mean_p(a_p x_p + b_p)`` for every pixel of ``x`` (B, 1, H, W); edge-replicated."""
        r = self.window // 2
        a, b = self.affine()
        xp = F.pad(x, (r, r, r, r), mode="replicate") if r else x
        n = self.window * self.window
        # conv2d is a correlation: output (y, x) sees xp[y + i, x + j] = x at offset (i-r, j-r).
        kernel = (a / n).view(1, 1, self.window, self.window)
        if xp.device.type == "cpu":
            return _WindowCorrelation.apply(xp, kernel) + b.mean()
        return F.conv2d(xp, kernel) + b.mean()  # GPU: cuDNN's backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mean_response(x)
        return round_ste((torch.tanh(m) + 1.0) * 127.5)


class Block(nn.Module):
    """One branch: [RC] -> pattern pixels -> conv1 + ReLU -> dense 1x1 conv2..5 -> conv6 -> tanh.

    ``conv1`` is stored as a linear map over the pattern pixels in the spec's order (a, b, c, d)
    (S: the 2x2 kernel in row-major order, D: the same with dilation 2, Y: the four Y pixels),
    so one code path serves every pattern and the weight order is the LUT index order.
    The 1x1 layers are applied to a (pixels, channels) matrix; the dense concatenation is never
    materialised: layer k's pre-activation is accumulated from the earlier feature blocks with
    one ``addmm`` each (measured fastest on CPU, and it stores less for backward).
    """

    def __init__(self, branch: Branch, n_outputs: int, scale: int, nf: int = 64,
                 rc_channels: int | None = None, max_rows: int = 16384):
        super().__init__()
        self.max_rows = max_rows
        self.precision = "float32"  # one of PRECISIONS; LUTNet.set_precision sets all blocks
        self.branch = branch
        self.pattern = branch.pattern
        self.offsets = PATTERN_OFFSETS[branch.pattern]
        self.n_in = len(self.offsets)
        self.pad = max(max(dy, dx) for dy, dx in self.offsets)  # bottom/right padding
        self.n_outputs = n_outputs
        self.scale = scale if n_outputs > 1 else 1
        if n_outputs not in (1, self.scale ** 2):
            raise ValueError(f"n_outputs {n_outputs} must be 1 or scale**2")
        self.nf = nf
        self.rc = RCModule(branch.rc, rc_channels or nf) if branch.rc else None
        self.conv1 = nn.Linear(self.n_in, nf)
        self.conv2 = nn.Linear(nf, nf)
        self.conv3 = nn.Linear(2 * nf, nf)
        self.conv4 = nn.Linear(3 * nf, nf)
        self.conv5 = nn.Linear(4 * nf, nf)
        self.conv6 = nn.Linear(5 * nf, n_outputs)
        for layer in self.layers():
            # MuLUT's initialisation (kaiming normal, zero bias).
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def layers(self):
        return (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.conv6)

    # -- the MLP on pattern vectors ---------------------------------------------------------
    def mlp(self, p: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """``(M, n_in)`` pattern vectors (pixel / 255) -> ``(M, n_outputs)`` tanh outputs."""
        # tanh, the x127 rounding and the integer sums stay in float32 in every precision:
        # bf16 cannot even hold the stage sums exactly.
        precision = precision or self.precision
        if precision == "float32":
            return torch.tanh(self._mlp_linear(p))
        if precision == "bf16":
            return torch.tanh(dense_mlp_bf16(p, self.layers()))
        with torch.autocast(p.device.type, dtype=torch.bfloat16):
            z = self._mlp_linear(p)
        return torch.tanh(z.float())

    def _mlp_linear(self, p: torch.Tensor) -> torch.Tensor:
        """The MLP up to conv6, before tanh."""
        nf = self.nf
        # In-place accumulation and ReLU save one large allocation per op (addmm's backward
        # needs only its inputs, ReLU's only its output); about 15% per step on CPU.  Under
        # autocast in-place ops are not cast, so the bf16 path stays out of place.
        inplace = self.precision == "float32"
        feats = [torch.relu_(F.linear(p, self.conv1.weight, self.conv1.bias))]
        later = (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6)
        z = None
        for k, layer in enumerate(later):
            w = layer.weight
            z = torch.addmm(layer.bias, feats[0], w[:, :nf].t())
            for j in range(1, len(feats)):
                wj = w[:, j * nf:(j + 1) * nf].t()
                z = z.addmm_(feats[j], wj) if inplace else torch.addmm(z, feats[j], wj)
            if k < len(later) - 1:
                feats.append(torch.relu_(z))
        return z

    def patterns(self, v: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B*H*W, n_in)``: every anchor's pattern pixels, edge-padded."""
        b, _, h, w = v.shape
        vp = F.pad(v, (0, self.pad, 0, self.pad), mode="replicate") if self.pad else v
        taps = [vp[:, 0, dy:dy + h, dx:dx + w] for dy, dx in self.offsets]
        return torch.stack(taps, dim=-1).reshape(b * h * w, self.n_in)

    def _table_1d(self, v: torch.Tensor) -> torch.Tensor:
        """Single-pixel pattern: run the MLP on the 256 possible inputs and index it.

        Inputs are always on the ``k / 255`` grid here (images, re-quantised stage outputs and
        RC indices are all 8-bit), so this equals running the MLP per pixel.  The gradient with
        respect to ``v`` (needed through the straight-through rounding upstream) is supplied by
        a derivative table computed with forward-mode AD: ``(v - v.detach()) * dT/dv`` is zero
        in value and carries exactly the per-pixel gradient.
        """
        grid = torch.arange(256, dtype=v.dtype, device=v.device).div_(255.0).unsqueeze(1)
        # 256 rows cost nothing: the 1-D tables train in float32 whatever the precision (and
        # forward-mode AD needs the plain ops)
        precision = "float32" if self.precision == "bf16" else None
        table = self.mlp(grid, precision)                        # (256, n_out)
        idx = torch.round(v.reshape(-1) * 255.0).long().clamp_(0, 255)
        out = table[idx]
        if torch.is_grad_enabled() and v.requires_grad:
            with torch.no_grad(), fwAD.dual_level():
                dual = fwAD.make_dual(grid, torch.ones_like(grid))
                slope = fwAD.unpack_dual(self.mlp(dual, precision)).tangent  # dT/dv
            out = out + (v.reshape(-1, 1) - v.detach().reshape(-1, 1)) * slope[idx]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` stage input / 255 -> tanh outputs in image layout.

        Returns ``(B, 1, H, W)`` for one output, ``(B, 1, s*H, s*W)`` for ``s*s`` outputs
        (output ``k = s*dy + dx`` is HR pixel ``(s*y + dy, s*x + dx)``: a pixel shuffle).
        """
        b, _, h, w = x.shape
        per = max(1, self.max_rows // (h * w))
        if b > per and self.precision != "bf16":  # dense_mlp_bf16 chunks rows itself
            # Chunks of at most max_rows pixels keep the float32 and autocast paths' tensors
            # small: under glibc, large tensors are page-faulted anew on every call (see
            # training/allocator.py); measured ~2x per step before jemalloc.
            return torch.cat([self._forward(c) for c in x.split(per)], 0)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v = self.rc(x) / 255.0 if self.rc is not None else x
        if self.n_in == 1:
            out = self._table_1d(v)
        else:
            out = self.mlp(self.patterns(v))
        s = self.scale
        if s == 1:
            return out.view(b, 1, h, w)
        # (B, H, W, s, s) -> (B, H, s, W, s): the pixel shuffle in one permute + copy.
        return out.view(b, h, w, s, s).permute(0, 1, 3, 2, 4).reshape(b, 1, h * s, w * s)


class LUTNet(nn.Module):
    """The whole cascaded, rotation-ensembled network of a ModelSpec.

    ``blocks[array_key(si, bi)]`` is branch ``bi`` of stage ``si`` (``s1_b1``, ...), the same
    names the LUT bundle uses.  ``batch_rotations`` puts the orientations of a square input into
    the batch dimension (one call per branch instead of one per orientation); non-square
    inputs loop.
    """

    def __init__(self, spec: ModelSpec, nf: int = 64, rc_channels: int | None = None,
                 batch_rotations: bool = True, max_rows: int = 16384):
        super().__init__()
        self.spec = spec
        self.nf = nf
        self.rc_channels = rc_channels or nf
        self.batch_rotations = batch_rotations
        self.blocks = nn.ModuleDict()
        for si, bi, br in spec.branches():
            self.blocks[array_key(si, bi)] = Block(br, spec.n_outputs(si), spec.scale, nf,
                                                   self.rc_channels, max_rows)
        if spec.residual:
            # a residual model starts as nearest-neighbour upscaling (corrections of exactly 0)
            # instead of nearest plus the noise of randomly initialised last-stage outputs
            with torch.no_grad():
                for blk in self.stage_blocks(len(spec.stages) - 1):
                    blk.conv6.weight.zero_()

    @property
    def precision(self) -> str:
        return next(iter(self.blocks.values())).precision

    def set_precision(self, precision: str) -> None:
        """Run every block's MLP in ``precision`` (one of :data:`PRECISIONS`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        for blk in self.blocks.values():
            blk.precision = precision

    def stage_blocks(self, si: int) -> list[Block]:
        return [self.blocks[array_key(si, bi)] for bi in range(len(self.spec.stages[si].branches))]

    def _rotated_sum(self, blocks: list[Block], x: torch.Tensor) -> torch.Tensor:
        """``sum over branches of round(127 * tanh)`` in the rotated frame of ``x``."""
        acc = None
        for blk in blocks:
            o = round_ste(blk(x) * 127.0)
            acc = o if acc is None else acc + o
        return acc

    def stage_sum(self, si: int, x: torch.Tensor) -> torch.Tensor:
        """``acc`` of stage ``si``: exact integer sum over branches and orientations."""
        blocks = self.stage_blocks(si)
        n_or = self.spec.orientations
        if self.batch_rotations and x.shape[-1] == x.shape[-2]:
            b = x.shape[0]
            xr = torch.cat([orient(x, r) for r in range(n_or)], 0)
            parts = self._rotated_sum(blocks, xr)
            acc = parts[:b]
            for r in range(1, n_or):
                acc = acc + unorient(parts[r * b:(r + 1) * b], r)
            return acc
        acc = None
        for r in range(n_or):
            o = unorient(self._rotated_sum(blocks, orient(x, r)), r)
            acc = o if acc is None else acc + o
        return acc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.spec.stages) - 1
        image = x
        for si in range(len(self.spec.stages)):
            divisor, bias = self.spec.stage_rescale(si, interpolated=False)
            acc = self.stage_sum(si, x)
            if self.spec.adds_input(si):  # the input pixel over its block (spec.py)
                bias = nearest_base(torch.round(image * 255.0), self.spec.scale)
            if si == last:
                return round_ste(acc / divisor + bias)
            x = round_ste(torch.clamp(acc / divisor + bias, 0.0, 255.0)) / 255.0
        raise AssertionError("unreachable")

    # -- inference on uint8 images -----------------------------------------------------------
    @torch.no_grad()
    def upscale_uint8(self, image: np.ndarray, device=None) -> np.ndarray:
        """uint8 ``HxW`` or ``HxWxC`` -> uint8 upscaled image; every channel independently."""
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 HxW or HxWxC image, got {img.dtype} {img.shape}")
        planes = img[None] if img.ndim == 2 else np.moveaxis(img, 2, 0)
        dev = device or next(self.parameters()).device
        t = torch.from_numpy(np.ascontiguousarray(planes)).to(dev, torch.float32)
        y = self(t.unsqueeze(1) / 255.0).clamp_(0, 255).squeeze(1)
        out = y.to(torch.uint8).cpu().numpy()
        return out[0] if img.ndim == 2 else np.moveaxis(out, 0, 2).copy()


# -- the published MuLUT network ---------------------------------------------------------------
def load_mulut_npz(model: LUTNet, path) -> None:
    """Copy MuLUT's own weights (``s1_s.model.conv1.conv.weight``, ...) into ``model``.

    MuLUT names a block ``s{stage}_{mode}``; it maps to the branch of that stage whose pattern is
    the mode.  Its conv1 is a 2x2 conv (S, D) or a 1x4 conv over the gathered Y pixels (Y): in
    both cases the flattened kernel is in the pattern order (a, b, c, d), which is the order of
    this project's conv1 inputs.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read MuLUT weights {path}: {e}") from None
    used = set()
    for si, bi, br in model.spec.branches():
        if br.rc:
            raise WeightsError(f"MuLUT weights have no RC module (branch {array_key(si, bi)} "
                               f"is {br.label()})")
        prefix = f"s{si + 1}_{br.pattern.lower()}.model."
        blk = model.blocks[array_key(si, bi)]
        names = {"conv1": "conv1.conv", "conv6": "conv6.conv"}
        names.update({f"conv{k}": f"conv{k}.conv1.conv" for k in range(2, 6)})
        for ours, theirs in names.items():
            layer = getattr(blk, ours)
            for kind in ("weight", "bias"):
                key = prefix + theirs + "." + kind
                if key not in arrays:
                    raise WeightsError(f"{path}: no array {key!r} for branch "
                                       f"{array_key(si, bi)} ({br.label()})")
                a = arrays[key]
                target = getattr(layer, kind)
                want = tuple(target.shape)
                if a.size != target.numel():
                    raise WeightsError(f"{path}: {key} has shape {a.shape}, expected "
                                       f"{want} (nf={model.nf})")
                with torch.no_grad():
                    weights = torch.from_numpy(np.ascontiguousarray(a, np.float32))
                    target.copy_(weights.reshape(want))
                used.add(key)
    unused = sorted(set(arrays) - used)
    if unused:
        raise WeightsError(f"{path}: {len(unused)} arrays not used by this model "
                           f"(first: {unused[0]}); does the config match the weights?")

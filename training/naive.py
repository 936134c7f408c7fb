"""A deliberately straightforward forward pass of :class:`training.networks.LUTNet`.

Written the way MuLUT's and RC-LUT's reference code is: for every stage, rotation and branch,
pad, ``F.unfold`` the pattern window, run the block as real convolutions (2x2 / dilated 2x2 /
1x4 on the gathered Y pixels, 1x1 convs with explicit concatenation) on one patch per pixel,
and, for RC, unfold the N x N window and apply each position's ``Linear(1, C)`` and
``Linear(C, 1)`` in a Python loop.  It shares the parameters of a ``LUTNet`` but none of its
code paths, so the tests use it to check the optimised forward (folded RC convolution,
batched rotations, split dense layers, 1-D tables), and the benchmark uses it as the "before".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .networks import Block, LUTNet, RCModule, round_ste


def naive_rc(rc: RCModule, x: torch.Tensor) -> torch.Tensor:
    """RC index map of ``x`` (B, 1, H, W), one position at a time."""
    b, _, h, w = x.shape
    n, r = rc.window, rc.window // 2
    xp = F.pad(x, (r, r, r, r), mode="replicate") if r else x
    cols = F.unfold(xp, n)                                 # (B, N*N, H*W), p = N*i + j
    total = 0
    for p in range(n * n):
        v = cols[:, p, :].unsqueeze(-1)                    # (B, H*W, 1)
        hidden = F.linear(v, rc.w1[p].unsqueeze(1), rc.b1[p])        # Linear(1, C)
        total = total + F.linear(hidden, rc.w2[p].unsqueeze(0), rc.b2[p:p + 1])  # Linear(C, 1)
    m = (total / (n * n)).view(b, 1, h, w)
    return round_ste((torch.tanh(m) + 1.0) * 127.5)


def naive_block(blk: Block, x: torch.Tensor) -> torch.Tensor:
    """Block output (tanh, pixel-shuffled) computed patch by patch with real convolutions."""
    b, _, h, w = x.shape
    v = naive_rc(blk.rc, x) / 255.0 if blk.rc is not None else x
    k = blk.pad + 1
    vp = F.pad(v, (0, blk.pad, 0, blk.pad), mode="replicate") if blk.pad else v
    patches = F.unfold(vp, k).transpose(1, 2).reshape(b * h * w, 1, k, k)
    nf = blk.nf
    w1 = blk.conv1.weight
    if blk.pattern == "S":
        y = F.conv2d(patches, w1.view(nf, 1, 2, 2), blk.conv1.bias)
    elif blk.pattern == "D":
        y = F.conv2d(patches, w1.view(nf, 1, 2, 2), blk.conv1.bias, dilation=2)
    elif blk.pattern == "Y":
        g = torch.stack([patches[:, 0, i, j] for i, j in blk.offsets], 1).view(-1, 1, 1, 4)
        y = F.conv2d(g, w1.view(nf, 1, 1, 4), blk.conv1.bias)
    else:  # "1"
        y = F.conv2d(patches, w1.view(nf, 1, 1, 1), blk.conv1.bias)
    y = torch.relu(y)
    for layer in (blk.conv2, blk.conv3, blk.conv4, blk.conv5):
        y = torch.cat([y, torch.relu(F.conv2d(y, layer.weight[:, :, None, None], layer.bias))], 1)
    y = torch.tanh(F.conv2d(y, blk.conv6.weight[:, :, None, None], blk.conv6.bias))
    y = y.view(b, h * w, blk.n_outputs).transpose(1, 2).reshape(b, blk.n_outputs, h, w)
    return F.pixel_shuffle(y, blk.scale) if blk.scale > 1 else y


def naive_forward(model: LUTNet, x: torch.Tensor) -> torch.Tensor:
    """Same result as ``model(x)``: one block call per stage, orientation and branch."""
    spec = model.spec
    last = len(spec.stages) - 1
    image = x
    n_or = spec.orientations
    for si, stage in enumerate(spec.stages):
        acc = 0
        for r in range(n_or):
            # orientation r: rotation r, or (r >= 4) rotation r - 4 of the transpose
            xr = torch.rot90(x.transpose(2, 3) if r >= 4 else x, r % 4, (2, 3))
            for blk in model.stage_blocks(si):
                o = torch.rot90(round_ste(naive_block(blk, xr) * 127.0), -(r % 4), (2, 3))
                acc = acc + (o.transpose(2, 3) if r >= 4 else o)
        nb = len(stage.branches)
        if si == last:
            # residual: each output pixel adds the input pixel it came from (nearest upscaling)
            up = F.interpolate(image, scale_factor=spec.scale, mode="nearest") * 255.0
            return round_ste(acc / (nb * n_or // 4) + (torch.round(up) if spec.residual else 0.0))
        x = round_ste(torch.clamp(acc / (n_or * nb) + 127.0, 0.0, 255.0)) / 255.0
    raise AssertionError("unreachable")

"""The dense MLP of a block in bfloat16, as one autograd Function with a hand-written backward.

A block's MLP is ``conv1 .. conv5`` (each ReLU, each fed with the concatenation of all earlier
feature blocks) and ``conv6`` (no activation).  Under plain autocast this costs many small
matmuls with K = 64 slices, a weight cast per call, a bias pass and one fresh allocation per
op.  Here every layer, forward and backward, is one large-K matmul:

* Features live in one buffer per chunk of rows, transposed (``features x rows``): row 0 holds
  ones, then the five feature blocks.  Layer k's input is the contiguous slab ``F[:1 + 64k]``,
  its weight is ``[bias | W]`` (the ones row adds the bias inside the matmul), and its output
  is written straight into its own slab, where ReLU is applied in place.
* Backward: the gradient of feature block j is needed only once all its consumers (layers
  j+2 .. 6) have their pre-activation gradients ``dz``.  Those are kept in one buffer ordered
  by layer, so they form a contiguous tail, and block j's gradient is one matmul of the
  matching weight columns with that tail (no read-modify-write accumulation).  The ReLU mask
  comes from the stored post-ReLU features.  Weight and bias gradients of a layer are one
  matmul per chunk (the ones row gives the bias column), summed over chunks in float32.
* Weights are cast once per call, i.e. once per training step.
* Chunks of rows keep a chunk's features in cache from one layer to the next.
* Its buffers (features, transposed inputs, gradient scratch) are reused from one call to the
  next of the same shape (:class:`_Workspace`), so no step page-faults them in anew.

Matmuls accumulate in float32 inside oneDNN/MKL and round their outputs to bfloat16 (as
autocast does).  :func:`dense_mlp_reference` is the same forward arithmetic with plain
autograd ops: the tests compare values and gradients of the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_CHUNK", "dense_mlp_bf16", "dense_mlp_reference"]

# Rows per chunk: 8192 rows x 321 features x 2 bytes = 5 MB of features, held in L2/L3 between
# layers.  4096..16384 measure within a few percent of each other on the 2-core AMX machine;
# 65536 is 1.7x slower (features fall out of cache).
DEFAULT_CHUNK = 8192
_BF16 = torch.bfloat16
_threshold_backward_out = torch.ops.aten.threshold_backward.grad_input


class _Workspace:
    """Buffers of the fused MLP kept for the next call of the same shape.

    Under glibc every large tensor comes with fresh pages (training/allocator.py): the features
    of a default RC-LUT step, about 750 MB, were page-faulted anew each step (200 000 minor
    faults, a tenth of a 1-thread step on the AVX512-BF16 EPYC).  A call hands its buffers back
    after their last use (the forward's scratch at its end, the saved features at the end of
    the backward) and the next call of that shape takes them, whatever the allocator.  Every
    element of a taken buffer is written before it is read."""

    MAX_SHAPES = 16  # the oldest shape's buffers are dropped beyond this (other batch sizes)

    def __init__(self):
        self._free: dict[tuple, list[torch.Tensor]] = {}

    def take(self, shape, dtype, device) -> torch.Tensor:
        free = self._free.get((tuple(shape), dtype, torch.device(device)))
        return free.pop() if free else torch.empty(shape, dtype=dtype, device=device)

    def give(self, *buffers) -> None:
        for buf in buffers:
            key = (tuple(buf.shape), buf.dtype, buf.device)
            if key not in self._free and len(self._free) >= self.MAX_SHAPES:
                del self._free[next(iter(self._free))]
            self._free.setdefault(key, []).append(buf)


_WORKSPACE = _Workspace()


def _augmented(weight: torch.Tensor, bias: torch.Tensor, dtype) -> torch.Tensor:
    """``[bias | weight]`` in ``dtype``: the bias column meets the ones row of the input."""
    return torch.cat([bias.detach().unsqueeze(1), weight.detach()], 1).to(dtype)


class _DenseMLP(torch.autograd.Function):
    """Forward and backward in ``dtype`` (bfloat16 for training; float64 in the tests, where
    the hand-written backward must match autograd to rounding error)."""

    @staticmethod
    def forward(ctx, p, chunk, dtype, *params):
        ws = [_augmented(w, b, dtype) for w, b in zip(params[0::2], params[1::2], strict=True)]
        m, n_in = p.shape
        nf, n_out = ws[0].shape[0], ws[-1].shape[0]
        last = len(ws) - 1
        width = 1 + nf * last
        nc = max(1, -(-m // chunk))
        mp = nc * chunk
        dev = p.device
        pp = F.pad(p.detach(), (0, 0, 0, mp - m)) if mp != m else p.detach()
        pt = _WORKSPACE.take((nc, 1 + n_in, chunk), dtype, dev)
        pt[:, 0].fill_(1.0)
        pt[:, 1:].copy_(pp.view(nc, chunk, n_in).transpose(1, 2))
        feats = _WORKSPACE.take((nc, width, chunk), dtype, dev)
        feats[:, 0].fill_(1.0)
        out = _WORKSPACE.take((nc, n_out, chunk), dtype, dev)
        for c in range(nc):
            f = feats[c]
            x = pt[c]
            for k in range(last):
                slab = f[1 + k * nf:1 + (k + 1) * nf]
                torch.mm(ws[k], x, out=slab).relu_()
                x = f[:1 + (k + 1) * nf]
            torch.mm(ws[last], f, out=out[c])
        z = torch.empty(mp, n_out, dtype=torch.float32, device=dev)
        z.view(nc, chunk, n_out).copy_(out.transpose(1, 2))
        _WORKSPACE.give(out)
        ctx.pt, ctx.feats, ctx.ws = pt, feats, ws
        ctx.m, ctx.chunk, ctx.nf, ctx.dtype = m, chunk, nf, dtype
        return z[:m] if mp != m else z

    @staticmethod
    def backward(ctx, gz):
        pt, feats, ws = ctx.pt, ctx.feats, ctx.ws
        m, chunk, nf, dtype = ctx.m, ctx.chunk, ctx.nf, ctx.dtype
        del ctx.pt, ctx.feats, ctx.ws
        nc, n_in1, _ = pt.shape
        mp = nc * chunk
        n_out = ws[-1].shape[0]
        last = len(ws) - 1
        dev = gz.device
        # dz buffer: layer k's (k = 1..last, 0-based: conv2..conv6) pre-activation gradient
        # at rows nf*(k-1) ..; block j (output of layer j) is consumed by layers j+1..last,
        # whose dz rows are the tail from nf*j.
        rows = nf * (last - 1) + n_out
        dz = _WORKSPACE.take((rows, chunk), dtype, dev)
        dz1 = _WORKSPACE.take((nf, chunk), dtype, dev)
        gblk = _WORKSPACE.take((nf, chunk), dtype, dev)
        # the weight columns that read block j, stacked in dz row order, transposed
        wt = [torch.cat([ws[k][:, 1 + j * nf:1 + (j + 1) * nf] for k in range(j + 1, last + 1)],
                        0).t().contiguous() for j in range(last)]
        gzp = F.pad(gz, (0, 0, 0, mp - m)) if mp != m else gz
        gzt = gzp.reshape(nc, chunk, n_out).transpose(1, 2)
        gw = [torch.zeros(w.shape, dtype=torch.float32, device=dev) for w in ws]
        need_p = ctx.needs_input_grad[0]
        gpt = _WORKSPACE.take((nc, n_in1 - 1, chunk), dtype, dev) if need_p else None
        w1t = ws[0][:, 1:].t().contiguous() if need_p else None
        for c in range(nc):
            f = feats[c]
            dz[rows - n_out:].copy_(gzt[c])
            for j in range(last - 1, -1, -1):
                torch.mm(wt[j], dz[j * nf:], out=gblk)
                target = dz[(j - 1) * nf:j * nf] if j else dz1
                _threshold_backward_out(gblk, f[1 + j * nf:1 + (j + 1) * nf], 0, grad_input=target)
            for k in range(1, last + 1):
                gk = dz[(k - 1) * nf:(k - 1) * nf + ws[k].shape[0]]
                gw[k] += torch.mm(gk, f[:ws[k].shape[1]].t())
            gw[0] += torch.mm(dz1, pt[c].t())
            if need_p:
                torch.mm(w1t, dz1, out=gpt[c])
        gp = None
        if need_p:
            gp = torch.empty(mp, n_in1 - 1, dtype=torch.float32, device=dev)
            gp.view(nc, chunk, n_in1 - 1).copy_(gpt.transpose(1, 2))
            gp = gp[:m]
            _WORKSPACE.give(gpt)
        _WORKSPACE.give(pt, feats, dz, dz1, gblk)
        grads = [gp, None, None]
        for g in gw:
            grads += [g[:, 1:], g[:, 0]]
        return tuple(grads)


def dense_mlp_bf16(p: torch.Tensor, layers, chunk: int = DEFAULT_CHUNK,
                   dtype: torch.dtype = _BF16) -> torch.Tensor:
    """``(M, n_in)`` float32 patterns -> ``(M, n_out)`` float32 pre-tanh outputs.

    ``layers``: the block's ``nn.Linear`` layers conv1 .. conv6 (dense connections implied:
    layer k's weight has ``nf * (k - 1)`` input columns in feature-block order).  ``dtype``
    other than bfloat16 is for the tests.
    """
    params = []
    for layer in layers:
        params += [layer.weight, layer.bias]
    return _DenseMLP.apply(p, int(chunk), dtype, *params)


def dense_mlp_reference(p: torch.Tensor, layers, dtype: torch.dtype = _BF16) -> torch.Tensor:
    """The arithmetic of :func:`dense_mlp_bf16` with plain autograd ops (the readable twin).

    Inputs, weights and biases rounded to ``dtype``; each layer one matmul (bias included) over
    the concatenated features, its output rounded to ``dtype``; float32 result.
    """
    ones = torch.ones(p.shape[0], 1, dtype=dtype, device=p.device)
    x = torch.cat([ones, p.to(dtype)], 1)
    feats = [ones]
    layers = list(layers)
    for layer in layers:
        w = torch.cat([layer.bias.unsqueeze(1), layer.weight], 1).to(dtype)
        z = x @ w.t()
        if layer is layers[-1]:
            return z.float()
        feats.append(torch.relu(z))
        x = torch.cat(feats, 1)
    raise ValueError("no layers")

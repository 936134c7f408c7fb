"""An exponential moving average (EMA) of a network's weights, kept beside training.

``[train] ema_decay = d`` (0 < d < 1) keeps, after every optimizer step,
``ema = d * ema + (1 - d) * weights`` over every floating-point tensor of the model's state
(parameters and buffers alike).  At a constant peak lr the weights wander around a minimum;
their average sits nearer its centre, which is what a cooldown buys by lowering the lr, here
for free and without ending the run.  The window is about ``1 / (1 - d)`` steps.

The average is float32 whatever the training precision (the bf16 paths read the float32
parameters), is saved in every checkpoint (``"ema"``) so that a resume reproduces it exactly,
and starts as a copy of the weights when a run (or a resumed run that had none) turns it on.
Validation scores it beside the raw weights (``"ema"`` in the log's validation records), and
``transfer --ema``, ``eval-network --ema`` and ``[pipeline] transfer_weights = "ema"`` use it.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float, state: dict | None = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        # state_dict() tensors share storage with the live parameters: the optimizer's
        # in-place updates show through them, so the list is built once.
        live = model.state_dict()
        self.names = [k for k, v in live.items() if v.is_floating_point()]
        self.live = [live[k] for k in self.names]
        if state is not None:
            missing = sorted(set(self.names) - set(state))
            if missing:
                raise ValueError(f"the EMA state lacks {len(missing)} of the model's tensors, "
                                 f"e.g. {missing[0]}")
            self.shadow = [state[k].detach().to(v.device, torch.float32).clone()
                           for k, v in zip(self.names, self.live, strict=True)]
        else:
            self.shadow = [v.detach().float().clone() for v in self.live]

    @torch.no_grad()
    def update(self) -> None:
        """One step: ``shadow += (1 - decay) * (live - shadow)``."""
        torch._foreach_lerp_(self.shadow, [v.float() for v in self.live], 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: s.clone() for k, s in zip(self.names, self.shadow, strict=True)}

    @contextmanager
    def swapped_in(self):
        """Inside the block the model holds the averaged weights; the live ones come back
        after it, bit for bit."""
        with torch.no_grad():
            saved = [v.clone() for v in self.live]
            for v, s in zip(self.live, self.shadow, strict=True):
                v.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for v, s in zip(self.live, saved, strict=True):
                    v.copy_(s)

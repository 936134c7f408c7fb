"""LUT fine-tuning: gradient descent on the table entries through the torch LUT forward.

The forward pass is the deployed engine's exact arithmetic (``lut_forward.py``), so what is
optimised here is what ``rclut`` computes.  Run folder ``RUN/`` (default: next to the output):
``last.pt`` (tables, optimizer, step; written atomically), ``log.jsonl`` (loss, lr, s/step and
the engine's validation PSNR), so an interrupted run continues with ``--resume``.

``flat_weight`` adds a flat-field term: every step also runs the 256 flat grey images (one
1x1 image per level: edge replication makes it as flat as any) and adds ``flat_weight`` times
their MSE against their own level.  A flat image reaches the tables only along their
diagonals, entries that natural crops rarely pin down exactly, so without it a model may shift
flat areas by a few levels (visible as banding).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rclut_numba.bundle import BundleError, load_bundle, save_bundle
from rclut_numba.evaluation import tables_psnr

from .data import SRDataset
from .lut_forward import LutForward
from .train import (
    REPO_ROOT,
    StopSignals,
    TrainError,
    TrainStopped,
    _Progress,
    _truncate_log,
    atomic_torch_save,
    cosine_factor,
    torch_threads_kept,
)


def engine_psnr(spec, arrays, val_dir) -> float:
    """Mean PSNR of tables through the numba engine on ``val_dir``, torch's thread count kept."""
    with torch_threads_kept():
        return tables_psnr(spec, arrays, val_dir)


def finetune(bundle, data_dirs, output, *, steps: int = 2000, batch_size: int = 32, crop: int = 48,
             lr: float = 3.0, lr_min: float = 0.15, run_dir=None, resume: bool = False,
             force: bool = False, seed: int = 0, val_every: int = 500, val_data=None,
             train_rc: bool = True, threads: int | None = None, log_every: int = 20,
             ckpt_every: int = 100, stop_after: int | None = None, quiet: bool = False,
             flat_weight: float = 0.0, data_shares=None, adam_eps: float = 1e-8) -> dict:
    """Fine-tune a bundle's tables; writes ``output`` (a bundle) when the schedule completes.

    ``data_shares``: one share of the samples per entry of ``data_dirs`` (``SRDataset``).
    ``adam_eps``: Adam's eps; far below the gradients' scale (1e-12) Adam moves every entry it
    touches by about ``lr`` a step, so such a leg wants an lr near 0.1, not 3.

    ``lr`` is Adam's step size in table units, but table gradients are tiny: at the end of a
    leg only 0.1 % of the entries have a root mean square gradient above Adam's eps (1e-8),
    so most entries move by about ``lr * gradient / eps`` a step, far less than ``lr``.  That
    is why the legs run at lr 3 (measured in docs/history.md, "LUT fine-tuning at lr 3").  Returns
    ``{"losses", "psnr_before", "psnr_after", "seconds"}`` (PSNRs from the numba engine on the
    validation set, None when it is absent).
    """
    output = Path(output)
    if output.exists() and not force:
        raise BundleError(f"{output} exists; use --force to overwrite")
    if not output.parent.is_dir():
        raise BundleError(f"output folder {output.parent} does not exist")
    spec, arrays = load_bundle(bundle)
    run = Path(run_dir) if run_dir else output.with_name(output.stem + "_finetune")
    run.mkdir(parents=True, exist_ok=True)
    last_path, log_path = run / "last.pt", run / "log.jsonl"
    if last_path.exists() and not resume:
        raise TrainError(f"{run} already holds a fine-tuning run; pass --resume or another --run")
    if not (math.isfinite(flat_weight) and flat_weight >= 0):
        raise TrainError(f"flat_weight must be a finite number >= 0, got {flat_weight}")
    if not (math.isfinite(adam_eps) and adam_eps > 0):
        raise TrainError(f"adam_eps must be a finite number > 0, got {adam_eps}")
    if threads:
        torch.set_num_threads(threads)
    say = (lambda *_: None) if quiet else (lambda s: print(s, flush=True))

    net = LutForward(spec, arrays, train_rc=train_rc, project_rc=True)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr, eps=adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, steps, lr, lr_min))
    start = 0
    if resume and last_path.exists():
        ck = torch.load(last_path, map_location="cpu", weights_only=False)
        if (ck.get("spec") != spec.to_json() or ck.get("steps") != steps
                or ck.get("flat_weight", 0.0) != flat_weight
                or ck.get("adam_eps", 1e-8) != adam_eps):
            raise TrainError(f"{last_path} belongs to another model or schedule")
        net.load_state_dict(ck["tables"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start = int(ck["step"])
        _truncate_log(log_path, start)
        say(f"resumed {run} at step {start}/{steps}")

    vd = Path(val_data) if val_data else REPO_ROOT.parent / "shared" / "data" / "benchmark" / "Set5"
    val_dir = vd if (vd / "HR").is_dir() else None
    if val_dir is None:
        say(f"validation skipped: {vd} has no HR/ folder")
    psnr_before = engine_psnr(spec, arrays, val_dir) if val_dir else None
    if psnr_before is not None:
        say(f"engine PSNR before fine-tuning: {psnr_before:.4f} dB ({val_dir.name})")

    dataset = SRDataset(data_dirs, spec.scale, crop, run / "cache", seed, log=say,
                        shares=data_shares)

    def save(step):
        atomic_torch_save({"spec": spec.to_json(), "steps": steps, "tables": net.state_dict(),
                           "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "step": step, "flat_weight": flat_weight, "adam_eps": adam_eps},
                          last_path)

    flat_in = torch.arange(256, dtype=torch.float32).reshape(256, 1, 1, 1)

    losses, window, t_last, t0 = [], [], time.time(), time.time()
    flat_max = None  # the flat field's largest shift at the last step (levels)
    end = steps if stop_after is None else min(steps, stop_after)
    bar = _Progress(start, steps, log_every, enabled=not quiet)
    stop = StopSignals().install()
    with open(log_path, "a") as logf:
        try:
            for step in range(start, end):
                lr_b, hr_b = dataset.batch(step, batch_size)
                pred = net(torch.round(lr_b * 255.0))
                loss = F.mse_loss(pred / 255.0, hr_b)
                if flat_weight:
                    flat_out = net(flat_in)  # (256, 1, s, s)
                    flat_err = flat_out - flat_in  # forward values are the engine's exactly
                    loss = loss + flat_weight * flat_err.square().mean() / 255.0 ** 2
                    flat_max = float(flat_err.detach().abs().max())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainError(f"loss became {value} at step {step + 1}; lower the lr")
                losses.append(value)
                window.append(value)
                done = step + 1
                bar.update(done, value, opt.param_groups[0]["lr"])
                if done % log_every == 0 or done == end:
                    now = time.time()
                    record = {"step": done, "loss": sum(window) / len(window),
                              "lr": opt.param_groups[0]["lr"],
                              "s_per_step": (now - t_last) / len(window),
                              "threads": torch.get_num_threads()}  # CPU hours: the stamp
                    if flat_max is not None:
                        record["flat_max"] = flat_max
                    logf.write(json.dumps(record) + "\n")
                    logf.flush()
                    window, t_last = [], now
                if val_dir is not None and val_every and (done % val_every == 0 or done == steps):
                    p = engine_psnr(spec, net.export_arrays(), val_dir)
                    logf.write(json.dumps({"step": done, "val_psnr": p}) + "\n")
                    logf.flush()
                    bar.write(f"step {done}: engine PSNR {p:.4f} dB ({val_dir.name})")
                if done % ckpt_every == 0 or done == end or stop.signum is not None:
                    save(done)
                if stop.signum is not None:
                    raise TrainStopped(stop.signum, done)
        finally:
            stop.restore()
            bar.close()
    seconds = time.time() - t0
    if end < steps:
        say(f"stopped after step {end}/{steps}; continue with --resume")
        return {"losses": losses, "psnr_before": psnr_before, "psnr_after": None,
                "seconds": seconds}
    final = net.export_arrays()
    save_bundle(output, spec, final, force=force)
    psnr_after = engine_psnr(spec, final, val_dir) if val_dir else None
    say(f"wrote {output}" + (f"; engine PSNR {psnr_before:.4f} -> {psnr_after:.4f} dB"
                             if val_dir else "") + f" in {seconds / 60:.1f} min")
    return {"losses": losses, "psnr_before": psnr_before, "psnr_after": psnr_after,
            "seconds": seconds}

"""``[train] precision = "auto"``: the MLP precision that is fastest on the machine at hand.

bfloat16 pays only where the hardware multiplies it natively.  Elsewhere oneDNN emulates bf16
matmuls, measured tens of times slower than float32 on an AVX2-only AMD EPYC (381 s against
6 s per default step), so "auto" picks:

* CPU: ``bf16`` (``training/dense_mlp.py``) when torch's own probes say bf16 matmuls run on
  native instructions: the x86 CPU has AVX512-BF16 or AMX, ATen dispatches AVX-512 kernels
  (``torch.backends.cpu.get_cpu_capability()``), oneDNN may use bf16
  (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``), and no ``ONEDNN_MAX_CPU_ISA`` cap below
  the bf16 instructions is set; ``float32`` otherwise, aarch64 included (not measured there).
  ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` therefore gives ``float32`` on any
  machine, as it makes torch behave as on an AVX2-only CPU.
* CUDA: ``bf16`` on compute capability 8.0 and later (Ampere, Hopper, ...: bf16 tensor cores),
  ``float32`` before.  Chosen from the hardware's documented bf16 support, not measured here.
* Any other device: ``float32``.

An explicit precision in the config is used as given.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

__all__ = ["CpuBf16Probe", "choose_precision", "probe_cpu", "resolve_precision"]

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still include native bf16 dot products
_BF16_ISA_MARKS = ("BF16", "AMX", "FP16", "AVX10")


@dataclass(frozen=True)
class CpuBf16Probe:
    """What torch reports about the CPU, as :func:`choose_precision` needs it (injectable)."""

    machine: str            # platform.machine(): "x86_64", "aarch64", ...
    capability: str         # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", ...
    mkldnn_bf16: bool       # torch.ops.mkldnn._is_mkldnn_bf16_supported()
    native_bf16: bool       # the CPU has AVX512-BF16 or AMX tiles (torch.cpu probes)
    onednn_max_isa: str = ""  # the ONEDNN_MAX_CPU_ISA environment variable, if set

    def describe(self) -> str:
        isa = f", ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}" if self.onednn_max_isa else ""
        return (f"{self.machine}, capability {self.capability}, oneDNN bf16 "
                f"{'yes' if self.mkldnn_bf16 else 'no'}, native bf16 (AVX512-BF16/AMX) "
                f"{'yes' if self.native_bf16 else 'no'}{isa}")


def probe_cpu() -> CpuBf16Probe:
    import torch

    def flag(name: str) -> bool:
        fn = getattr(torch.cpu, name, None)  # private probes: absent means "not known to have"
        return bool(fn()) if callable(fn) else False

    return CpuBf16Probe(
        machine=platform.machine().lower(),
        capability=torch.backends.cpu.get_cpu_capability(),
        mkldnn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        native_bf16=flag("_is_avx512_bf16_supported") or flag("_is_amx_tile_supported"),
        onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
    )


def _isa_cap_allows_bf16(cap: str) -> bool:
    cap = cap.strip().upper()
    return cap in ("", "ALL", "DEFAULT") or any(m in cap for m in _BF16_ISA_MARKS)


def choose_precision(device_type: str, cpu: CpuBf16Probe | None = None,
                     cuda_capability: tuple[int, int] | None = None) -> tuple[str, str]:
    """``(precision, why)`` for ``precision = "auto"`` on ``device_type``; a pure function of
    its arguments (tests inject the probes)."""
    if device_type == "cuda":
        if cuda_capability is None:
            return "float32", "CUDA compute capability unknown"
        name = f"compute capability {cuda_capability[0]}.{cuda_capability[1]}"
        if cuda_capability >= (8, 0):
            return "bf16", f"CUDA {name}: bf16 tensor cores"
        return "float32", f"CUDA {name}: no bf16 tensor cores"
    if device_type != "cpu":
        return "float32", f"device {device_type}"
    if cpu is None:
        raise ValueError("choose_precision on a CPU needs its probe (probe_cpu())")
    native = (cpu.machine in ("x86_64", "amd64") and cpu.native_bf16 and cpu.mkldnn_bf16
              and cpu.capability.upper().startswith("AVX512")
              and _isa_cap_allows_bf16(cpu.onednn_max_isa))
    if native:
        return "bf16", f"CPU multiplies bf16 natively ({cpu.describe()})"
    return "float32", f"bf16 would be emulated ({cpu.describe()})"


def resolve_precision(requested: str, device="cpu") -> tuple[str, str]:
    """``(precision, why)``: ``requested`` unless it is ``"auto"``, then :func:`choose_precision`
    with the probes of ``device`` (a ``torch.device`` or its name) on this machine."""
    if requested != "auto":
        return requested, "set in the config"
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return choose_precision("cuda", cuda_capability=torch.cuda.get_device_capability(device))
    if device.type == "cpu":
        return choose_precision("cpu", probe_cpu())
    return choose_precision(device.type)

"""Precision and device from the machine: ``precision: auto`` and ``device: auto`` in every stage that runs the LLM.

Why: bf16 halves the cost of a matmul on a CPU that does it natively (AVX-512 BF16 or AMX) and multiplies it by
34-115 on one that emulates it (AVX2 only), so no single setting is right everywhere. The choice is made here,
once per process, from what torch can do on this machine:

- CUDA: ``bf16`` where ``torch.cuda.is_bf16_supported()``, else ``fp32``.
- CPU: ``bf16`` only when all three hold: the CPU announces ``avx512_bf16`` or ``amx_bf16``; torch's kernels run
  at that level (``torch.backends.cpu.get_cpu_capability()`` is not capped, e.g. by ``ATEN_CPU_CAPABILITY``);
  and a probe matmul (a few ms) is no slower in bf16 than in fp32 (which also catches ``ONEDNN_MAX_CPU_ISA``
  caps and any other emulation). Otherwise ``fp32``.

An explicit ``precision: bf16`` on a CPU that would emulate it is kept, with a warning that says why it will be
slow. Every stage prints its :class:`Compute` when it starts and writes it to its manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# A probe ratio (bf16 time / fp32 time) above this means bf16 is emulated. Native bf16 measures 0.1-0.5 and
# emulated ~100 at the probe's size (256^3; 34-55 at 512x576x1536), so the threshold sits far from both.
EMULATED_RATIO = 2.0


@dataclass(frozen=True)
class Compute:
    """Where and in which precision the LLM runs, and why."""

    device: str  # "cpu" or "cuda"
    precision: str  # "bf16", "fp16" or "fp32"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def dtype(self):
        """The torch dtype of this precision: what inference casts its weights to (training keeps fp32 weights)."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)

    def describe(self) -> str:
        return f"{self.device} {self.precision} ({self.reason})"

    def as_dict(self) -> dict:
        return asdict(self)


def check(precision: str, device: str, where: str) -> None:
    """Reject an unknown precision or device when a config is built (before any stage runs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{where}.precision: expected one of {PRECISIONS}, got {precision!r}")
    if device not in DEVICES:
        raise ValueError(f"{where}.device: expected one of {DEVICES}, got {device!r}")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return frozenset(flags)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` or "unknown" where it cannot be read):
    what benchmark results record beside their numbers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def torch_cpu_capability() -> str:
    """The vector level torch's CPU kernels run at here (``AVX512``, ``AVX2``, ``DEFAULT``, ...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - an old or unusual build: treat as unknown
        return "UNKNOWN"


@lru_cache(maxsize=1)
def bf16_probe_ratio(size: int = 256, repeats: int = 5) -> float:
    """Best-of-``repeats`` time of a ``size``-cubed bf16 matmul over the same in fp32 (after one warm-up each).

    Best-of, not mean, so a busy machine cannot make native bf16 look emulated: emulation is 34-115x slower,
    far beyond any noise."""
    import torch

    def best(dtype) -> float:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=g).to(dtype)
        b = torch.randn(size, size, generator=g).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(torch.bfloat16) / max(best(torch.float32), 1e-9)


def cpu_bf16() -> tuple[bool, str]:
    """``(native, why)``: whether bf16 runs natively on this CPU under this torch, with the evidence."""
    flags = cpu_flags()
    if not any(f in flags for f in NATIVE_BF16_FLAGS):
        return False, f"CPU has no {' or '.join(NATIVE_BF16_FLAGS)}: bf16 would be emulated"
    cap = torch_cpu_capability()
    if not (cap.startswith("AVX512") or cap.startswith("AMX")):
        return False, f"torch's CPU kernels run at {cap} here: bf16 would be emulated"
    ratio = bf16_probe_ratio()
    if ratio > EMULATED_RATIO:
        return False, f"a bf16 matmul probe ran {ratio:.0f}x slower than fp32: bf16 is emulated here"
    return True, f"native bf16 ({'/'.join(f for f in NATIVE_BF16_FLAGS if f in flags)}, probe {ratio:.2f}x fp32)"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve(precision: str = "auto", device: str = "auto", where: str = "") -> Compute:
    """The :class:`Compute` for a stage's ``precision`` and ``device`` settings on this machine."""
    check(precision, device, where or "compute")
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    elif device == "cuda" and not cuda_available():
        raise ValueError(
            f"{where or 'compute'}.device: 'cuda' requested but torch sees no CUDA device (use device: auto or cpu)"
        )
    if device == "cuda":
        import torch

        native = torch.cuda.is_bf16_supported()
        why = "CUDA device with bf16" if native else "CUDA device without bf16"
    else:
        native, why = cpu_bf16()
    if precision == "auto":
        return Compute(device, "bf16" if native else "fp32", why)
    if precision == "fp16" and device == "cpu":
        raise ValueError(f"{where or 'compute'}.precision: fp16 is for CUDA; on a CPU use auto, bf16 or fp32")
    if precision == "bf16" and not native:
        log.warning(
            "%s: precision bf16 was asked for, but %s; every matmul will be many times slower than in "
            "fp32 (set precision: auto or fp32)",
            where or "compute",
            why,
        )
        return Compute(device, "bf16", f"asked for; {why}")
    return Compute(device, precision, "asked for")


def autocast(compute: Compute):
    """Mixed-precision autocast for ``compute`` (a null context in fp32): fp32 weights, bf16/fp16 matmuls."""
    import contextlib

    import torch

    if compute.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(compute.device, dtype=torch.bfloat16 if compute.bf16 else torch.float16)

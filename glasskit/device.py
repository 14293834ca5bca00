"""Device choice shared by every stage: cuda, then mps, then cpu, unless told otherwise."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from glasskit.errors import ConfigError

_allocator_tuned = False


def tune_cpu_allocator() -> None:
    """Keep freed memory in the process (glibc): large tensors are served from the heap, not
    fresh ``mmap`` pages, so a training step stops paying ~10k page faults for the
    activations it allocates and frees each step. Process-wide and once; a no-op elsewhere."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    import ctypes

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: heap, not mmap, below 1 GiB
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap


def cpu_bf16_native() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 autocast
    pays; elsewhere bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def machine_name(device: torch.device) -> str:
    """The processor a run used, for its record: the GPU's name on CUDA, else the CPU's model
    name with its family and model numbers where the system gives them (a virtual machine's
    "AMD EPYC" is a Zen 3 or a Zen 4: float results differ between processors in their last
    bits, and only the Zen 4 trains in bf16)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block ends
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}
    if "model name" in fields:
        numbers = (f" (family {fields['cpu family']}, model {fields['model']})"
                   if "cpu family" in fields and "model" in fields else "")
        return fields["model name"] + numbers
    return platform.processor() or platform.machine()

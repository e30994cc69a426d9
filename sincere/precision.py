"""Precision and memory format of the model's forward and backward: fp32 or bf16 autocast,
contiguous or channels_last, decided when a run starts (``amp`` / ``channels_last``: true,
false or auto).

``auto`` turns bf16 autocast on where it is fast: on CUDA with bf16 support, and on CPUs that
compute bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16``; Arm ``bf16``). On a CPU without
native bf16 it is emulated and an order of magnitude slower (measured: 24 views/s against 370 in
fp32 for the mini model on a 2-core AMD EPYC of the Zen 3 generation), so there ``auto`` keeps
fp32 and says so in one line. ``channels_last`` is on by default: oneDNN's convolutions were faster with it
on both CPUs measured, with and without bf16 (results/benchmarks/training.md), with one
exception on the CPU. oneDNN (3.12, in torch 2.14) writes outside its scratchpad in the
weight gradient of a strided 1x1 convolution with a channels_last input of fewer input channels
than its channel block (8 with AVX2, 16 with AVX-512; uxlfoundation/oneDNN issue 6035): the
heap is corrupted and the process dies (``free(): invalid size``) or, worse, goes on. A ResNet's
downsampling shortcut is such a convolution with ``model.width`` input channels, so on the CPU
``auto`` keeps models with a narrower one than ``SAFE_CPU_CHANNELS`` contiguous, and an explicit
``channels_last=true`` is refused for them. The loss is always computed in fp32 (the embeddings are cast up before it, and every
loss in :mod:`sincere.losses` turns autocast off inside), so only the network runs in bf16.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from sincere.config import ConfigError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")   # x86 (two) and Arm (Features: bf16)
SAFE_CPU_CHANNELS = 16        # the widest oneDNN channel block (AVX-512) of the 1x1 bug above


class PrecisionError(ConfigError):
    """A precision or memory format that cannot be used here; the message says what to set."""


def narrowest_strided_1x1(model: torch.nn.Module) -> Optional[int]:
    """The fewest input channels of a strided 1x1 convolution in ``model`` (None: it has none)."""
    widths = [m.in_channels for m in model.modules()
              if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
              and tuple(m.stride) != (1, 1)]
    return min(widths) if widths else None


def bf16_flags(cpuinfo: str) -> tuple[str, ...]:
    """The native-bf16 flags in the text of /proc/cpuinfo (x86 ``flags``, Arm ``Features``)."""
    flags = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports in /proc/cpuinfo (Linux); () elsewhere or when
    none is listed."""
    try:
        return bf16_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (so bf16 autocast is a speed-up, not emulation)."""
    return bool(cpu_bf16_flags())


@dataclass(frozen=True)
class FastPath:
    """What a run uses: bf16 autocast of the model (``amp``), the channels_last memory format,
    and a one-line note when ``auto`` fell back to fp32 (empty otherwise)."""
    amp: bool
    channels_last: bool
    note: str = ""

    @property
    def description(self) -> str:
        return (("bf16 autocast" if self.amp else "fp32")
                + (", channels_last" if self.channels_last else ", contiguous"))

    def autocast(self, device: torch.device):
        """The autocast context of the model's forward (disabled for fp32)."""
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.amp)


def resolve(amp, channels_last, device: torch.device,
            model: Optional[torch.nn.Module] = None) -> FastPath:
    """``amp`` / ``channels_last`` (true, false or "auto") on ``device`` for ``model`` -> the
    settings a run uses. auto: channels_last on (on the CPU only for models whose strided 1x1
    convolutions have at least ``SAFE_CPU_CHANNELS`` input channels); bf16 on CUDA where the GPU
    supports it and on CPUs with native bf16, fp32 elsewhere with a note naming the override.
    PrecisionError for channels_last=true on the CPU with a narrower model."""
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
        note = "" if fast or amp != "auto" else (
            "this GPU has no bf16 support: training in fp32 (amp=auto)")
        return FastPath(amp=fast if amp == "auto" else bool(amp),
                        channels_last=True if channels_last == "auto" else bool(channels_last),
                        note=note)
    if device.type != "cpu":                      # e.g. mps: only what is asked for
        return FastPath(amp=amp is True, channels_last=channels_last is True)
    fast = cpu_has_native_bf16()
    notes = []
    if not fast and amp == "auto":
        notes.append(f"this CPU ({platform.machine()}) has no native bf16 (no avx512_bf16, "
                     "amx_bf16 or bf16 flag): training in fp32; amp=true forces bf16 (emulated, "
                     "much slower)")
    narrow = narrowest_strided_1x1(model) if model is not None else None
    safe = narrow is None or narrow >= SAFE_CPU_CHANNELS
    if not safe and channels_last is True:
        raise PrecisionError(
            f"channels_last=true on the CPU with a strided 1x1 convolution of {narrow} input "
            f"channels (fewer than {SAFE_CPU_CHANNELS}) corrupts memory in oneDNN "
            "(uxlfoundation/oneDNN issue 6035); set channels_last=auto or false, or "
            f"model.width >= {SAFE_CPU_CHANNELS}")
    if not safe and channels_last == "auto":
        notes.append(f"contiguous tensors: channels_last with a strided 1x1 convolution of "
                     f"{narrow} input channels hits a oneDNN memory bug on the CPU")
    return FastPath(amp=fast if amp == "auto" else bool(amp),
                    channels_last=safe if channels_last == "auto" else bool(channels_last),
                    note="; ".join(notes))

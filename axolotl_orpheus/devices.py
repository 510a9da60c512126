"""Which device runs the models, and the full fp32 precision that makes results the same on every one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to encode on: the one asked for, else cuda, then mps, then cpu."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_devices(requested: str | None = None, listed: list[str] | None = None) -> list[torch.device]:
    """The devices to encode on, one SNAC replica each: those listed (of one kind, as OrpheusArgs checks), else
    `pick_device(requested)`, where a bare `cuda` means every visible GPU."""
    if listed:
        return [torch.device(name) for name in listed]
    device = pick_device(requested)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [device]


@contextmanager
def exact_fp32() -> Iterator[None]:
    """Full fp32 convolutions and matmuls on CUDA, whatever the process's TF32 settings.

    With cuDNN's default TF32, codes depend on the batch and on the GPU; in IEEE fp32 batched codes equal
    one-at-a-time codes and equal the CPU's.
    """
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved

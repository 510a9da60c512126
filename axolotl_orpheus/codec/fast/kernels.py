"""SNAC's Snake and its depthwise and 1x1 convolutions as C kernels (kernels.c), built with the machine's C
compiler.

They do torch's float operations in the same order with a fraction of the memory traffic; `kernel_forms` uses
each only where it gives torch's values on the machine. Each process builds them into a temporary folder:
`-march=native` code is never shared between machines. Where no C compiler with OpenMP is found (`CC`, else
`cc`), SNAC keeps torch's paths; without MKL's sin in torch, so does Snake.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import torch

LOG = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
# The mode torch passes to MKL's sin (aten/src/ATen/cpu/vml.h): VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE.
SIN_MODE = 0x2 | 0x140000 | 0x100

_FLOATS, _LONG, _INT = ctypes.c_void_p, ctypes.c_long, ctypes.c_int


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernels, or None (logged) where they cannot be built."""
    command = [
        *shlex.split(os.environ.get("CC") or "cc"),
        "-O3",
        "-march=native",
        "-ffp-contract=off",
        "-fno-math-errno",
        "-fopenmp",
        "-shared",
        "-fPIC",
        str(SOURCE),
    ]
    try:  # the temporary folder too: without a writable one, SNAC still loads, on torch's paths
        with tempfile.TemporaryDirectory() as folder:
            built = os.path.join(folder, "kernels.so")
            subprocess.run([*command, "-o", built], check=True, capture_output=True, text=True, timeout=300)
            kernels = ctypes.CDLL(built)  # loaded after torch: OpenMP is torch's own libgomp, no second thread pool
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "stderr", None) or str(exc)
        LOG.info(
            f"SNAC: torch's CPU kernels only; `{' '.join(command)}` failed ({reason.strip()[-300:]}). Set CC "
            "to a C compiler with OpenMP, and TMPDIR to a writable folder, for faster encoding with the same codes"
        )
        return None
    kernels.snake.argtypes = [_FLOATS] * 4 + [_LONG] * 3 + [ctypes.c_void_p, ctypes.c_longlong, _INT]
    kernels.depthwise_conv1d.argtypes = [_FLOATS] * 4 + [_LONG] * 3 + [_INT] * 4
    if has_pointwise(kernels):
        kernels.pointwise_conv1d.argtypes = [_FLOATS] * 4 + [_LONG] * 4 + [_INT] * 2
    return kernels


def has_pointwise(kernels: ctypes.CDLL | None) -> bool:
    """Whether the 1x1 convolution was built: only for CPUs with AVX-512 or AVX2."""
    return hasattr(kernels, "pointwise_conv1d")


@functools.cache
def mkl_sin() -> int | None:
    """The address of MKL's vmsSin in torch's CPU library, which torch's sin calls; None without MKL."""
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return ctypes.cast(torch_cpu.vmsSin, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None


def _rows(x: torch.Tensor) -> tuple[int, int, int]:
    """(rows, channels, length) of a contiguous (batch, channels, length) tensor."""
    return x.shape[0] * x.shape[1], x.shape[1], x.shape[-1]


def snake(x: torch.Tensor, alpha: torch.Tensor, recip: torch.Tensor) -> torch.Tensor:
    """x + sin(alpha x)^2 * recip, alpha and recip per channel; x is float32 (batch, channels, length)."""
    x, alpha, recip = x.contiguous(), alpha.contiguous(), recip.contiguous()
    out = torch.empty_like(x)
    library().snake(
        x.data_ptr(),
        alpha.data_ptr(),
        recip.data_ptr(),
        out.data_ptr(),
        *_rows(x),
        mkl_sin(),
        SIN_MODE,
        torch.get_num_threads(),
    )
    return out


def depthwise_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dilation: int, bias_first: bool
) -> torch.Tensor:
    """A depthwise convolution of odd kernel, stride 1 and zero padding that keeps the length; weight is
    (channels, 1, taps). Each output sums the taps in order by fused multiply-adds, from the bias or from zero
    with the bias added after: oneDNN's two orders."""
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    out = torch.empty_like(x)
    library().depthwise_conv1d(
        x.data_ptr(),
        weight.data_ptr(),
        bias.data_ptr(),
        out.data_ptr(),
        *_rows(x),
        weight.shape[-1],
        dilation,
        int(bias_first),
        torch.get_num_threads(),
    )
    return out


def pointwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, bias_first: bool) -> torch.Tensor:
    """A 1x1 convolution; weight is (outputs, inputs, 1). Each output sums the inputs in order by fused
    multiply-adds, from the bias or from zero with the bias added after: oneDNN's two orders."""
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    batch, inputs, length = x.shape
    out = x.new_empty(batch, weight.shape[0], length)
    library().pointwise_conv1d(
        x.data_ptr(),
        weight.data_ptr(),
        bias.data_ptr(),
        out.data_ptr(),
        batch,
        inputs,
        weight.shape[0],
        length,
        int(bias_first),
        torch.get_num_threads(),
    )
    return out

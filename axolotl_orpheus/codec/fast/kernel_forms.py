"""Which modules of a loaded SNAC run a C kernel: each only where it gives torch's values on this CPU.

A Snake or a depthwise convolution is checked once at load, on random signals; a 1x1 convolution by the shape
of its input, since oneDNN picks its order of summation by size (`PointwiseOrders`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np
import torch
from snac import SNAC
from snac.layers import Snake1d

from axolotl_orpheus.codec.fast import kernels

LOG = logging.getLogger(__name__)


def is_depthwise_same_length(module: torch.nn.Module) -> bool:
    """A depthwise convolution with an odd kernel, stride 1, zero padding that keeps the length, and a bias: those
    of SNAC's residual units (dilations 1, 3 and 9) and of its encoder's and decoder's ends."""
    return (
        isinstance(module, torch.nn.Conv1d)
        and module.groups == module.in_channels == module.out_channels
        and module.stride[0] == 1
        and module.padding_mode == "zeros"
        and module.kernel_size[0] % 2 == 1
        and module.padding[0] == module.dilation[0] * (module.kernel_size[0] - 1) // 2
        and module.bias is not None
    )


def is_pointwise(module: torch.nn.Module) -> bool:
    """A 1x1 convolution with a bias: those after the depthwise ones in SNAC's residual units."""
    return (
        isinstance(module, torch.nn.Conv1d)
        and module.kernel_size[0] == module.stride[0] == module.dilation[0] == module.groups == 1
        and module.padding[0] == 0
        and module.bias is not None
    )


def snake_by_kernel(self: Snake1d, x: torch.Tensor) -> torch.Tensor:
    return kernels.snake(x, self.alpha, self.recip)


def depthwise_by_kernel(self: torch.nn.Conv1d, x: torch.Tensor, bias_first: bool) -> torch.Tensor:
    return kernels.depthwise_conv1d(x, self.weight, self.bias, self.dilation[0], bias_first)


class PointwiseOrders:
    """A 1x1 convolution's forward by the C kernel, in oneDNN's order for each input shape; one per model.

    oneDNN picks its order by size (with 2 threads, SNAC's 192-channel ones change order from one length to
    the next), so no check at load can settle it: the first input of each shape runs torch's convolution
    and the kernel in both orders, and the order that gives torch's values, if any, serves that shape after.
    """

    def __init__(self) -> None:
        # By (inputs, outputs, input shape, threads): True sums from the bias, False from zero with the bias after,
        # None neither (torch's convolution stays).
        self.found: dict[tuple, bool | None] = {}

    def __call__(self, conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        key = (conv.in_channels, conv.out_channels, tuple(x.shape), torch.get_num_threads())
        if key not in self.found:
            expected = torch.nn.Conv1d.forward(conv, x)
            self.found[key] = next(
                (
                    first
                    for first in (True, False)
                    if torch.equal(kernels.pointwise_conv1d(x, conv.weight, conv.bias, first), expected)
                ),
                None,
            )
            return expected
        order = self.found[key]
        if order is None:
            return torch.nn.Conv1d.forward(conv, x)
        return kernels.pointwise_conv1d(x, conv.weight, conv.bias, order)


def check_signals(max_channels: int) -> Callable[[int], list[torch.Tensor]]:
    """Random signals of a given channel count to compare a form with torch's on: a batch of two whose length no
    dilation divides and a longer signal that SNAC's dilations, 3 and 9, divide; two sizes, as oneDNN may pick
    its kernels by size. Views of one random draw, which is the costly part."""
    shapes = (2, 1031), (1, 9 * 512)
    generator = np.random.default_rng(0)
    draw = torch.from_numpy(generator.standard_normal(max_channels * 9 * 512, dtype=np.float32) * 3)
    return lambda channels: [
        draw[: batch * channels * length].view(batch, channels, length) for batch, length in shapes
    ]


def gives_torch_values(form: Callable, torch_form: Callable, signals: list[torch.Tensor]) -> bool:
    """Whether `form` gives `torch_form`'s values bit for bit on `signals`."""
    with torch.inference_mode():
        return all(torch.equal(form(x), torch_form(x)) for x in signals)


def candidate_forms(module: torch.nn.Module) -> tuple[list[Callable], int] | None:
    """The C-kernel forms that may replace the module's forward and its channel count, for a Snake or a depthwise
    convolution. oneDNN sums a convolution's taps from the bias (its depthwise kernel, dilation 1) or from zero,
    adding the bias after (im2col and gemm, dilated); the kernel can do either."""
    if isinstance(module, Snake1d) and kernels.mkl_sin() is not None:
        return [functools.partial(snake_by_kernel, module)], module.alpha.shape[1]
    if is_depthwise_same_length(module):
        forms = [functools.partial(depthwise_by_kernel, module, bias_first=first) for first in (True, False)]
        return forms, module.in_channels
    return None


def use_c_kernels(model: SNAC) -> str:
    """Swap in the C kernels: for Snake and the depthwise convolutions each where it gives torch's values on this
    CPU, for the 1x1 convolutions in the order each shape's check finds. Returns which path runs, for the log."""
    if kernels.library() is None:
        return "torch's kernels (the C kernels could not be built)"
    if kernels.mkl_sin() is None:
        LOG.info("SNAC: torch has no MKL sin here, so Snake keeps torch's path")
    candidates = [(module, *found) for module in model.modules() if (found := candidate_forms(module))]
    signals = check_signals(max(channels for _, _, channels in candidates))
    swapped = 0
    for module, forms, channels in candidates:
        exact = next((form for form in forms if gives_torch_values(form, module.forward, signals(channels))), None)
        if exact is not None:
            module.forward = exact
            swapped += 1
    if swapped < len(candidates):
        LOG.info(
            f"SNAC: {len(candidates) - swapped} of {len(candidates)} Snake activations and depthwise convolutions "
            "keep torch's path, whose values the C kernels do not reproduce on this CPU"
        )
    path = f"C kernels for {swapped} of {len(candidates)} Snake activations and depthwise convolutions"
    if not kernels.has_pointwise(kernels.library()):
        return path
    orders = PointwiseOrders()  # the model's own, held by its 1x1 convolutions: its shapes, learned as it runs
    for module in model.modules():
        if is_pointwise(module):
            module.forward = functools.partial(orders, module)
    return f"{path}, and for its 1x1 convolutions where each shape's first input shows torch's order"

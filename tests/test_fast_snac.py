"""The fast SNAC path (axolotl_orpheus.codec.fast): the C kernels give torch's values, and where they cannot be
built, or orpheus_cpu_kernels is false, SNAC runs torch's kernels with the same codes."""

from __future__ import annotations

import functools

import pytest
import torch
from snac.layers import Snake1d

from axolotl_orpheus import codec
from axolotl_orpheus.codec.fast import in_place, kernel_forms, kernels
from helpers import assert_same_codes

# These tests load SNAC under patched kernels and checks: each load is the package's own, never the one kept.
pytestmark = pytest.mark.fresh_snac_loads

# Where the machine lacks what a kernel needs, SNAC runs torch's paths (tested) and these tests have nothing to check.
needs_c_kernels = pytest.mark.skipif(kernels.library() is None, reason="no C compiler with OpenMP: no C kernels")
needs_mkl_sin = pytest.mark.skipif(kernels.mkl_sin() is None, reason="torch has no MKL sin, which the C Snake calls")
needs_pointwise = pytest.mark.skipif(
    not kernels.has_pointwise(kernels.library()), reason="the 1x1 kernel is built only for AVX-512 or AVX2"
)


def kernel_modules(model) -> list[torch.nn.Module]:
    """The modules whose forward is one of the C kernels."""

    def runs_a_kernel(forward) -> bool:
        function = getattr(forward, "func", None)
        return function in (kernel_forms.snake_by_kernel, kernel_forms.depthwise_by_kernel) or isinstance(
            function, kernel_forms.PointwiseOrders
        )

    return [m for m in model.modules() if runs_a_kernel(m.__dict__.get("forward"))]


@pytest.fixture
def threads(request):
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)


@needs_c_kernels
@needs_mkl_sin
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_the_c_kernels_give_torch_values_bit_for_bit(threads):
    """The C Snake equals torch's in-place Snake, and the C depthwise convolution the stock one in one of its two
    orders, on this CPU: SNAC's channel counts and dilations, lengths that are and are not multiples of the
    dilation or of the kernels' blocks, batches of one and three, and large values (sin's argument reduction)."""
    generator = torch.Generator().manual_seed(0)
    for channels, dilation, length, batch in [
        (48, 1, 61440, 1),
        (48, 3, 61440, 1),
        (48, 9, 61441, 1),
        (96, 9, 30720, 3),
        (384, 3, 958, 2),
        (1024, 9, 17, 1),
        (64, 1, 2, 1),
        (8, 9, 3000, 2),
    ]:
        x = torch.randn(batch, channels, length, generator=generator) * torch.logspace(-3, 3, channels)[:, None]
        snake = Snake1d(channels)
        conv = torch.nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation, groups=channels)
        snake.alpha.data = torch.rand(1, channels, 1, generator=generator) * 2
        in_place.use_in_place_snake(snake)
        with torch.inference_mode():
            (snake_by_kernel,), _ = kernel_forms.candidate_forms(snake)
            assert torch.equal(snake_by_kernel(x), in_place.snake_in_place(snake, x)), (channels, length)
            expected = torch.nn.Conv1d.forward(conv, x)
            orders = [
                first
                for first in (True, False)
                if torch.equal(kernel_forms.depthwise_by_kernel(conv, x, first), expected)
            ]
        assert orders, (channels, dilation, length, batch)


@needs_pointwise
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_the_c_pointwise_convolution_gives_torch_values_in_one_of_its_orders(threads):
    """SNAC's 1x1 convolutions where they are costly (48 and 96 channels over long signals) and short ones, at
    lengths that are and are not multiples of the kernel's tile."""
    generator = torch.Generator().manual_seed(0)
    for channels, length, batch in [
        (48, 61440, 1),
        (96, 30720, 1),
        (96, 4608, 3),
        (48, 1031, 2),
        (96, 64, 1),
        (48, 70, 1),
    ]:
        conv = torch.nn.Conv1d(channels, channels, 1)
        x = torch.randn(batch, channels, length, generator=generator)
        with torch.inference_mode():
            expected = torch.nn.Conv1d.forward(conv, x)
            assert any(
                torch.equal(kernels.pointwise_conv1d(x, conv.weight, conv.bias, first), expected)
                for first in (True, False)
            )


@needs_pointwise
def test_each_shape_of_a_pointwise_convolution_takes_the_order_its_first_input_shows(monkeypatch):
    """oneDNN's order for a 1x1 convolution depends on the size, so each shape is checked on its first input:
    torch's values every time, the kernel after a match, torch's convolution where no order matches."""
    orders = kernel_forms.PointwiseOrders()
    conv = torch.nn.Conv1d(48, 48, 1)
    calls = []
    real = kernels.pointwise_conv1d

    def counted(x, weight, bias, first):
        calls.append((x.shape[-1], first))
        return real(x, weight, bias, first) + (1.0 if x.shape[-1] == 333 else 0.0)  # no order matches at 333

    monkeypatch.setattr(kernels, "pointwise_conv1d", counted)
    with torch.inference_mode():
        for length in (4096, 4096, 333, 333, 4096):
            x = torch.randn(1, 48, length)
            assert torch.equal(orders(conv, x), torch.nn.Conv1d.forward(conv, x))
    found = orders.found[(48, 48, (1, 48, 4096), torch.get_num_threads())]
    assert found is not None and orders.found[(48, 48, (1, 48, 333), torch.get_num_threads())] is None
    tried = [first for length, first in calls if length == 4096]
    assert tried[-2:] == [found, found] and len(tried) == 3 + (not found)  # the check in order, then the kernel twice
    assert [first for length, first in calls if length == 333] == [True, False]  # checked once, then torch's


@needs_c_kernels
@needs_mkl_sin
@needs_pointwise
def test_load_uses_the_c_kernels_where_they_give_torch_values(monkeypatch, standins, caplog):
    """On CPU every Snake, depthwise and 1x1 convolution of SNAC (encoder and decoder) runs a C kernel; where
    the check at load finds other values (another CPU's kernels), a Snake or depthwise convolution keeps
    torch's path and the log says so. A compiled encoder keeps torch's forms, which Inductor can trace. Each
    model learns its 1x1 orders in its own memo."""
    path = str(standins["snac"])
    first = codec.load_snac(path, "cpu")
    swapped = kernel_modules(first)
    assert sum(isinstance(m, Snake1d) for m in swapped) == 57
    assert sum(kernel_forms.is_depthwise_same_length(m) for m in swapped) == 26
    assert sum(kernel_forms.is_pointwise(m) for m in swapped) == 31
    real = kernel_forms.gives_torch_values

    def not_at_96_channels(form, torch_form, signals):
        return signals[0].shape[1] != 96 and real(form, torch_form, signals)

    monkeypatch.setattr(kernel_forms, "gives_torch_values", not_at_96_channels)
    with caplog.at_level("INFO", logger="axolotl_orpheus"):
        model = codec.load_snac(path, "cpu")
    channels = {m: found[1] for m in model.modules() if (found := kernel_forms.candidate_forms(m))}
    kept = [m for m in channels if m not in kernel_modules(model)]  # 1x1 convolutions are checked by shape
    assert kept == [m for m in channels if channels[m] == 96] and len(kept) == 10
    assert "10 of 83 Snake activations and depthwise convolutions keep torch's path" in caplog.text
    assert f"SNAC {path} on cpu: C kernels for 73 of 83 Snake activations and depthwise convolutions" in caplog.text
    memos = [{m.forward.func for m in each.modules() if kernel_forms.is_pointwise(m)} for each in (first, model)]
    assert all(len(memo) == 1 for memo in memos) and memos[0] != memos[1]
    assert not kernel_modules(codec.load_snac(path, "cpu", compile_encoder=True).encoder)  # Inductor: torch's forms


@pytest.mark.parametrize("differs_at", ["short", "long"])
def test_the_check_at_load_refuses_a_form_that_differs_at_either_size(differs_at):
    """The check compares a short batch and a long signal: a form wrong at only one of them is refused."""
    conv = torch.nn.Conv1d(8, 8, 7, dilation=9, padding=27, groups=8)
    signals = kernel_forms.check_signals(8)(8)
    assert [x.shape for x in signals] == [(2, 8, 1031), (1, 8, 4608)]
    stock = functools.partial(torch.nn.Conv1d.forward, conv)
    assert kernel_forms.gives_torch_values(stock, stock, signals)

    def off_by_a_little(x):
        wrong = (x.shape[-1] > 2000) == (differs_at == "long")
        return stock(x) + (1e-3 if wrong else 0.0)

    assert not kernel_forms.gives_torch_values(off_by_a_little, stock, signals)


@pytest.mark.parametrize("missing", ["compiler", "temporary folder"])
def test_without_a_c_compiler_snac_keeps_torchs_paths(missing, monkeypatch, standins, stock_snac, speech_24k, caplog):
    """No compiler (CC names none), or no writable temporary folder to build in: loading still works, on torch's
    paths with the same codes, and says why."""
    import tempfile

    kernels.library.cache_clear()
    with monkeypatch.context() as patched, caplog.at_level("INFO", logger="axolotl_orpheus"):
        if missing == "compiler":
            patched.setenv("CC", "/nonexistent/cc")
        else:
            patched.setattr(tempfile, "tempdir", "/nonexistent/tmp")
        model = codec.load_snac(str(standins["snac"]), "cpu")
    kernels.library.cache_clear()  # the session's other models built theirs with the machine's compiler
    assert not kernel_modules(model)
    assert "SNAC: torch's CPU kernels only; `" in caplog.text and "Set CC" in caplog.text
    assert ("/nonexistent/cc -O3" if missing == "compiler" else "/nonexistent/tmp") in caplog.text
    assert "on cpu: torch's kernels (the C kernels could not be built)" in caplog.text
    assert_same_codes(codec.encode(model, speech_24k[:2]), codec.encode(stock_snac, speech_24k[:2]))


@needs_c_kernels
def test_cpu_kernels_off_runs_torchs_kernels_with_the_same_codes(monkeypatch, standins, stock_snac, speech_24k, caplog):
    """orpheus_cpu_kernels: false: no module runs a C kernel, nothing is built, the log says torch's kernels run,
    and the codes are stock SNAC's (as the C kernels' are: test_codec)."""
    built = []
    with monkeypatch.context() as patched, caplog.at_level("INFO", logger="axolotl_orpheus"):
        patched.setattr(kernels, "library", lambda: built.append(1))
        model = codec.load_snac(str(standins["snac"]), "cpu", cpu_kernels=False)
    assert not kernel_modules(model) and not built
    assert f"SNAC {standins['snac']} on cpu: torch's kernels (orpheus_cpu_kernels: false)" in caplog.text
    assert_same_codes(codec.encode(model, speech_24k[:2]), codec.encode(stock_snac, speech_24k[:2]))

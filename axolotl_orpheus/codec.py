"""The SNAC codec: load it safely, pick a device, encode clips in exact batches, decode codes to audio."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import json
import logging
import os
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from snac import SNAC
from snac.layers import ResidualUnit, Snake1d
from torch.nn.utils import parametrize

from axolotl_orpheus import cpu_kernels
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.layout import SAMPLES_PER_FRAME

LOG = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"

Codes = tuple[np.ndarray, np.ndarray, np.ndarray]


def pick_device(requested: str | None = None) -> torch.device:
    """The device to encode on: the one asked for, else cuda, then mps, then cpu."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_devices(requested: str | None = None, listed: list[str] | None = None) -> list[torch.device]:
    """The devices to encode on, one SNAC replica each: those listed, else `pick_device(requested)`, where
    a bare `cuda` means every visible GPU."""
    if listed:
        devices = [torch.device(name) for name in listed]
        if len({device.type for device in devices}) > 1:
            raise ValueError(f"orpheus_encode_devices {listed} mixes device types; list devices of one kind")
        return devices
    device = pick_device(requested)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [device]


def snac_files(name_or_path: str) -> tuple[Path, Path]:
    """config.json and pytorch_model.bin of a local SNAC folder or a hub repo (downloaded and cached)."""
    if os.path.isdir(name_or_path):
        folder = Path(name_or_path)
        files = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"SNAC folder {name_or_path} lacks {', '.join(missing)}; it needs {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, as the hub repo hubertsiuzdak/snac_24khz has"
            )
        return files
    from huggingface_hub import hf_hub_download

    return (
        Path(hf_hub_download(name_or_path, CONFIG_FILE)),
        Path(hf_hub_download(name_or_path, WEIGHTS_FILE)),
    )


def weights_digest(name_or_path: str) -> str:
    """A digest of the SNAC weights, so that prepared rows are tied to the exact model that made them."""
    digest = hashlib.sha256()
    for file in snac_files(name_or_path):
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def check_snac_config(name_or_path: str, config: dict) -> None:
    """Orpheus' codes come from the 24 kHz SNAC with 3 levels and 2048-sample frames; refuse any other."""
    rate, strides = config.get("sampling_rate"), config.get("vq_strides")
    hop = int(np.prod(config.get("encoder_rates") or [0]))
    if rate != SAMPLE_RATE or strides != [4, 2, 1] or hop * 4 != SAMPLES_PER_FRAME:
        raise ValueError(
            f"SNAC model {name_or_path} is a {rate} Hz model with vq_strides {strides} and hop {hop}; Orpheus "
            f"needs the 24 kHz model with 3 levels (vq_strides [4, 2, 1], hop 512): set orpheus_snac_model: "
            "hubertsiuzdak/snac_24khz"
        )


def _snake_in_place(self: Snake1d, x: torch.Tensor) -> torch.Tensor:
    """SNAC's Snake activation, x + sin(alpha x)^2 / alpha, with the same operations in place.

    Snake is about half of encode time on CPU and memory-bound: the stock version makes four passes that
    each allocate a tensor. The same operations in the same order give identical values (inference only).
    `x * alpha`, not `alpha * x`: the same products, but torch loops faster with the full tensor first.
    """
    shape = x.shape
    x = x.reshape(shape[0], shape[1], -1)
    return torch.mul(x, self.alpha).sin_().pow_(2).mul_(self.recip).add_(x).reshape(shape)


def _use_in_place_snake(module: Snake1d) -> None:
    """Swap in `_snake_in_place`, with SNAC's 1 / (alpha + 1e-9) computed once into a buffer (which follows the
    model to its device). Made on every call, that pair of tiny tensors was left between the activations on
    the heap, which then grew with every clip while encoding keeps freed memory (seen with the C kernels)."""
    module.register_buffer("recip", (module.alpha.detach() + 1e-9).reciprocal(), persistent=False)
    module.forward = types.MethodType(_snake_in_place, module)


def _residual_in_place(self: ResidualUnit, x: torch.Tensor) -> torch.Tensor:
    """SNAC's residual unit, adding the input into the block's fresh output instead of a new tensor (the
    same sums: x + y == y + x), which spares a pass over memory (inference only)."""
    y = self.block(x)
    pad = (x.shape[-1] - y.shape[-1]) // 2
    return y.add_(x[..., pad:-pad] if pad > 0 else x)


def _is_depthwise_same_length(module: torch.nn.Module) -> bool:
    """A depthwise convolution with an odd kernel, stride 1, zero padding that keeps the length, and a bias: those of
    SNAC's residual units (dilations 1, 3 and 9) and of its encoder's and decoder's ends."""
    return (
        isinstance(module, torch.nn.Conv1d)
        and module.groups == module.in_channels == module.out_channels
        and module.stride[0] == 1
        and module.padding_mode == "zeros"
        and module.kernel_size[0] % 2 == 1
        and module.padding[0] == module.dilation[0] * (module.kernel_size[0] - 1) // 2
        and module.bias is not None
    )


def _is_pointwise(module: torch.nn.Module) -> bool:
    """A 1x1 convolution with a bias: those after the depthwise ones in SNAC's residual units."""
    return (
        isinstance(module, torch.nn.Conv1d)
        and module.kernel_size[0] == module.stride[0] == module.dilation[0] == module.groups == 1
        and module.padding[0] == 0
        and module.bias is not None
    )


def _snake_by_kernel(self: Snake1d, x: torch.Tensor) -> torch.Tensor:
    return cpu_kernels.snake(x, self.alpha, self.recip)


def _depthwise_by_kernel(self: torch.nn.Conv1d, x: torch.Tensor, bias_first: bool) -> torch.Tensor:
    return cpu_kernels.depthwise_conv1d(x, self.weight, self.bias, self.dilation[0], bias_first)


# The order oneDNN sums a 1x1 convolution in, found by shape: True from the bias, False from zero with the bias
# after, None neither (torch's convolution stays), keyed by (inputs, outputs, input shape, threads).
_POINTWISE_ORDERS: dict[tuple, bool | None] = {}


def _pointwise_by_kernel(self: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution by the C kernel, in oneDNN's order for this shape and thread count.

    oneDNN picks its order by size (with 2 threads, SNAC's 192-channel ones change order from one length to
    the next), so no check at load can settle it: the first input of each shape runs torch's convolution
    and the kernel in both orders, and the order that gives torch's values, if any, serves that shape after.
    """
    key = (self.in_channels, self.out_channels, tuple(x.shape), torch.get_num_threads())
    if key not in _POINTWISE_ORDERS:
        expected = torch.nn.Conv1d.forward(self, x)
        _POINTWISE_ORDERS[key] = next(
            (first for first in (True, False)
             if torch.equal(cpu_kernels.pointwise_conv1d(x, self.weight, self.bias, first), expected)),
            None,
        )
        return expected
    order = _POINTWISE_ORDERS[key]
    return torch.nn.Conv1d.forward(self, x) if order is None else cpu_kernels.pointwise_conv1d(x, self.weight, self.bias, order)


def _check_signals(max_channels: int) -> Callable[[int], list[torch.Tensor]]:
    """Random signals of a given channel count to compare a form with torch's on: a batch of two whose length no
    dilation divides and a longer signal that SNAC's dilations, 3 and 9, divide; two sizes, as oneDNN may pick
    its kernels by size. Views of one random draw, which is the costly part."""
    shapes = (2, 1031), (1, 9 * 512)
    draw = torch.from_numpy(np.random.default_rng(0).standard_normal(max_channels * 9 * 512, dtype=np.float32) * 3)
    return lambda channels: [draw[: batch * channels * length].view(batch, channels, length) for batch, length in shapes]


def _gives_torch_values(form: Callable, torch_form: Callable, signals: list[torch.Tensor]) -> bool:
    """Whether `form` gives `torch_form`'s values bit for bit on `signals`."""
    with torch.inference_mode():
        return all(torch.equal(form(x), torch_form(x)) for x in signals)


def _kernel_forms(module: torch.nn.Module) -> tuple[list[Callable], int] | None:
    """The C-kernel forms that may replace the module's forward and its channel count, for a Snake or a depthwise
    convolution. oneDNN sums a convolution's taps from the bias (its depthwise kernel, dilation 1) or from zero,
    adding the bias after (im2col and gemm, dilated); the kernel can do either."""
    if isinstance(module, Snake1d) and cpu_kernels.mkl_sin() is not None:
        return [functools.partial(_snake_by_kernel, module)], module.alpha.shape[1]
    if _is_depthwise_same_length(module):
        forms = [functools.partial(_depthwise_by_kernel, module, bias_first=first) for first in (True, False)]
        return forms, module.in_channels
    return None


def _use_cpu_kernels(model: SNAC) -> None:
    """Swap in the C kernels (cpu_kernels): for Snake and the depthwise convolutions each where it gives torch's
    values on this CPU, for the 1x1 convolutions in the order each shape's check finds."""
    if cpu_kernels.library() is None:
        return
    if cpu_kernels.mkl_sin() is None:
        LOG.info("SNAC: torch has no MKL sin here, so Snake keeps torch's path")
    candidates = [(module, *found) for module in model.modules() if (found := _kernel_forms(module))]
    signals = _check_signals(max(channels for _, _, channels in candidates))
    kept = 0
    for module, forms, channels in candidates:
        exact = next((form for form in forms if _gives_torch_values(form, module.forward, signals(channels))), None)
        if exact is None:
            kept += 1
        else:
            module.forward = exact
    if kept:
        LOG.info(
            f"SNAC: {kept} of {len(candidates)} Snake activations and depthwise convolutions keep torch's path, "
            "whose values the C kernels do not reproduce on this CPU"
        )
    if cpu_kernels.has_pointwise(cpu_kernels.library()):
        for module in model.modules():
            if _is_pointwise(module):
                module.forward = functools.partial(_pointwise_by_kernel, module)


def load_snac(name_or_path: str, device: torch.device | str | None = None, compile_encoder: bool = False) -> SNAC:
    """Load SNAC in eval mode on `device`, reading the weights with weights_only=True.

    `SNAC.from_pretrained` calls plain torch.load, which would execute any pickle in a downloaded file.
    With `compile_encoder`, the encoder is compiled with torch.compile, for every clip length at once:
    Inductor fuses each Snake into one pass and computes its sin with Sleef, 4x faster than the MKL sin that
    eager torch calls on CPU, but a fifth of the sines differ in the last bit; on 10 minutes of speech about
    0.02% of codes differ (benchmarks/preprocess.py --compile reports the share), hence opt-in; on CPU it is
    also slower than the C kernels that SNAC runs otherwise. torch caches the compiled kernels on disk
    (TORCHINDUCTOR_CACHE_DIR): only the first compilation is slow.
    """
    config_file, weights_file = snac_files(name_or_path)
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    check_snac_config(name_or_path, config)
    model = SNAC(**config)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    for module in model.modules():
        if isinstance(module, Snake1d):
            _use_in_place_snake(module)
        if isinstance(module, ResidualUnit):
            module.forward = types.MethodType(_residual_in_place, module)
        # Weight norm recomputes every weight on every call; for inference compute them once (same values).
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    device = pick_device(str(device) if device else None)
    if compile_encoder:  # Inductor cannot trace into the C kernels; it fuses torch's forms itself
        model.encoder = torch.compile(model.encoder, dynamic=True)
    elif device.type == "cpu":  # on GPUs torch's kernels are fast; their exactness is cuDNN's
        _use_cpu_kernels(model)
    return model.eval().to(device)


@contextmanager
def exact_fp32() -> Iterator[None]:
    """Full fp32 convolutions and matmuls on CUDA, whatever the process's TF32 settings.

    With cuDNN's default TF32, codes depend on the batch (about 4% differ between a batch and one clip at a
    time on an H200) and on the GPU; in IEEE fp32 batched codes equal one-at-a-time codes and equal the CPU's.
    """
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


# glibc's malloc parameters (malloc.h), its default for M_MMAP_MAX, and the largest mmap threshold its dynamic
# rule reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), which sets the trim threshold to twice the mmap threshold.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX, _DYNAMIC_MMAP_THRESHOLD_MAX = 65536, 32 * 1024 * 1024


@contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Have glibc keep freed memory for reuse while encoding, and give it back after.

    Each activation in SNAC's encoder is tens of MB. glibc maps every such block afresh and unmaps it when
    it is freed, so each layer pays page faults on memory the previous one just gave back. Keeping freed
    memory in the heap ran the same kernels 2.3x faster on 10 s clips on a 2-core CPU (shorter clips gain
    less), with identical codes. Without glibc (macOS, musl) this does nothing.

    Any mallopt switches off glibc's dynamic mmap threshold for good, which would leave the rest of the process
    (`axolotl train` on unprepared data) mapping every block over 128 KB afresh. So leaving sets the thresholds
    where the dynamic rule settles in a process that frees large blocks, as torch's do: blocks up to 32 MB come
    from the heap, and up to 64 MB of free memory at its top is kept.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        yield
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MMAP_THRESHOLD_MAX)
        mallopt(_M_TRIM_THRESHOLD, 2 * _DYNAMIC_MMAP_THRESHOLD_MAX)
        malloc_trim(0)


# Clips longer than this are encoded in windows: the encoder needs about 21 MB per second of audio, so a
# one-hour clip in one pass would need 75 GB. Each window sees CONTEXT_FRAMES of audio on both sides, far
# beyond the encoder's receptive field (about 190 ms), so its codes equal those of the whole clip.
WINDOW_FRAMES = 704  # 60 s
CONTEXT_FRAMES = 12  # 1 s


# Audio per batch when no batch size is set (on a GPU): the encoder holds about 21 MB of activations per
# second of audio, so about 7 GB, whatever the clips' length; a batch that does not fit is split in halves.
BATCH_SECONDS = 320


def clips_per_batch(frames: int, batch_size: int | None) -> int:
    """`batch_size`, else as many clips of `frames` frames as make up BATCH_SECONDS of audio (at least one)."""
    return batch_size or max(1, BATCH_SECONDS * SAMPLE_RATE // (frames * SAMPLES_PER_FRAME))


def _encode_padded(model: SNAC, batch: np.ndarray) -> list[np.ndarray]:
    """SNAC codes of a (B, 1, T) batch whose T is whole frames, as numpy, in one transfer per level."""
    device = next(model.parameters()).device
    audio = torch.from_numpy(batch)
    if device.type == "cuda":  # from pinned memory the copy runs asynchronously, at full bus speed
        audio = audio.pin_memory().to(device, non_blocking=True)
    return [level.cpu().numpy() for level in model.encode(audio.to(device))]


def _encode_batch(model: SNAC, clips: list[np.ndarray], frames: int) -> list[Codes]:
    """Codes of clips padded to `frames` frames, in one batch, or in halves when the GPU runs out of memory.

    A batch that ran out of memory sets `model.too_many_samples`, so that later batches stay below it instead
    of each failing once before being split.
    """
    batch = np.zeros((len(clips), 1, frames * SAMPLES_PER_FRAME), dtype=np.float32)
    for slot, clip in enumerate(clips):
        batch[slot, 0, : len(clip)] = clip
    try:
        levels = _encode_padded(model, batch)
    except torch.OutOfMemoryError as exc:
        if len(clips) == 1:
            raise RuntimeError(
                f"SNAC ran out of GPU memory encoding one {frames * SAMPLES_PER_FRAME / SAMPLE_RATE:.0f} s clip; free "
                "GPU memory or set orpheus_device: cpu"
            ) from exc
        levels = None  # retried outside the handler, whose traceback still holds the failed batch's tensors
    if levels is None:
        model.too_many_samples = min(batch.size, getattr(model, "too_many_samples", batch.size))
        torch.cuda.empty_cache()
        half = len(clips) // 2
        return _encode_batch(model, clips[:half], frames) + _encode_batch(model, clips[half:], frames)
    return [(levels[0][slot], levels[1][slot], levels[2][slot]) for slot in range(len(clips))]


def _encode_windowed(model: SNAC, clip: np.ndarray, window_frames: int) -> Codes:
    n_frames = -(-len(clip) // SAMPLES_PER_FRAME)
    parts: list[list[np.ndarray]] = [[], [], []]
    for start in range(0, n_frames, window_frames):
        stop = min(n_frames, start + window_frames)
        first, last = max(0, start - CONTEXT_FRAMES), min(n_frames, stop + CONTEXT_FRAMES)
        segment = np.zeros((1, 1, (last - first) * SAMPLES_PER_FRAME), dtype=np.float32)
        samples = clip[first * SAMPLES_PER_FRAME : last * SAMPLES_PER_FRAME]
        segment[0, 0, : len(samples)] = samples
        for level, codes in enumerate(_encode_padded(model, segment)):
            per_frame = codes.shape[1] // (last - first)  # 1, 2 and 4 codes per frame
            parts[level].append(codes[0, (start - first) * per_frame : (stop - first) * per_frame])
    return tuple(np.concatenate(part) for part in parts)  # type: ignore[return-value]


@torch.inference_mode()
@exact_fp32()
def encode(
    model: SNAC, clips: list[np.ndarray], batch_size: int | None = None, window_frames: int = WINDOW_FRAMES
) -> list[Codes]:
    """SNAC codes (n, 2n, 4n per clip) of mono 24 kHz clips, in the order given.

    SNAC's encoder is non-causal, so zero-padding a clip to a longer one changes its last codes.
    Only clips of the same padded length share a batch, which makes batching exact: every clip gets
    the codes it would get alone (SNAC itself right-pads each clip to whole frames). A batch holds
    `batch_size` clips, or by default BATCH_SECONDS of audio. Clips longer than `window_frames` are
    encoded alone, window by window (see WINDOW_FRAMES).
    """
    n_frames = [-(-len(clip) // SAMPLES_PER_FRAME) for clip in clips]
    codes: list[Codes | None] = [None] * len(clips)
    by_length = sorted(range(len(clips)), key=n_frames.__getitem__)
    for frames, same_length in itertools.groupby(by_length, key=n_frames.__getitem__):
        same_length = list(same_length)
        if frames > window_frames:
            for row in same_length:
                codes[row] = _encode_windowed(model, clips[row], window_frames)
            continue
        size = clips_per_batch(frames, batch_size)
        if hasattr(model, "too_many_samples"):  # a batch this big ran out of memory before: stay below it
            size = max(1, min(size, (model.too_many_samples - 1) // (frames * SAMPLES_PER_FRAME)))
        for start in range(0, len(same_length), size):
            rows = same_length[start : start + size]
            for row, row_codes in zip(rows, _encode_batch(model, [clips[row] for row in rows], frames)):
                codes[row] = row_codes
    return codes  # type: ignore[return-value]


@torch.inference_mode()
@exact_fp32()
def decode(model: SNAC, codes: Codes, seed: int = 0) -> np.ndarray:
    """24 kHz mono float32 audio of one clip's codes, n * 2048 samples long.

    SNAC's decoder draws noise even in eval mode; a fixed seed makes the audio reproducible without
    touching the caller's random state.
    """
    device = next(model.parameters()).device
    levels = [torch.as_tensor(np.asarray(level), dtype=torch.long, device=device)[None] for level in codes]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.decode(levels)[0, 0].float().cpu().numpy()

"""The SNAC codec: load it safely, pick a device, encode clips in exact batches, decode codes to audio."""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from snac import SNAC

from axolotl_orpheus import fast_snac
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.layout import CONTEXT_FRAMES, SAMPLES_PER_FRAME, WINDOW_FRAMES, Codes, whole_frames
from axolotl_orpheus.reproducible import files_digest, seeded

LOG = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"


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
    return files_digest(snac_files(name_or_path))


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


def load_stock_snac(name_or_path: str, device: torch.device | str = "cpu") -> SNAC:
    """SNAC in eval mode on `device`, exactly as its own package builds it, its weights read with weights_only=True.

    `SNAC.from_pretrained` calls plain torch.load, which would execute any pickle in a downloaded file.
    """
    config_file, weights_file = snac_files(name_or_path)
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    check_snac_config(name_or_path, config)
    model = SNAC(**config)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def load_snac(
    name_or_path: str, device: torch.device | str | None = None, compile_encoder: bool = False, cpu_kernels: bool = True
) -> SNAC:
    """SNAC for inference on `device` (`pick_device`), with the same values as stock SNAC's (fast_snac); the C
    kernels run on CPU unless `cpu_kernels` is false.

    With `compile_encoder`, the encoder is compiled with torch.compile, for every clip length at once:
    Inductor fuses each Snake into one pass and computes its sin with Sleef instead of the MKL sin that eager
    torch calls on CPU, where a fraction of the sines differ in the last bit, and so do a few codes; hence
    opt-in. torch caches the compiled kernels on disk (TORCHINDUCTOR_CACHE_DIR): only the first compilation is slow.
    """
    model = load_stock_snac(name_or_path)
    device = pick_device(str(device) if device else None)
    if compile_encoder:  # Inductor cannot trace into the C kernels; it fuses torch's forms itself
        path = fast_snac.speed_up(model, c_kernels=False) + ", the encoder compiled (orpheus_compile)"
        model.encoder = torch.compile(model.encoder, dynamic=True)
    elif device.type != "cpu":  # on GPUs torch's kernels are fast; their exactness is cuDNN's
        path = fast_snac.speed_up(model, c_kernels=False)
    else:
        path = fast_snac.speed_up(model, c_kernels=cpu_kernels)
        path += "" if cpu_kernels else " (orpheus_cpu_kernels: false)"
    LOG.info(f"SNAC {name_or_path} on {device}: {path}")
    return model.to(device)


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


# glibc's malloc parameters (malloc.h), its default for M_MMAP_MAX, and the largest mmap threshold its dynamic
# rule reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), which sets the trim threshold to twice the mmap threshold.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX, _DYNAMIC_MMAP_THRESHOLD_MAX = 65536, 32 * 1024 * 1024


@contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Have glibc keep freed memory for reuse while encoding, and give it back after.

    Each activation in SNAC's encoder is tens of MB. glibc maps every such block afresh and unmaps it when
    it is freed, so each layer pays page faults on memory the previous one just gave back. Kept in the heap,
    freed memory serves the next layer, with identical codes. Without glibc (macOS, musl) this does nothing.

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
    n_frames = whole_frames(len(clip))
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
    n_frames = [whole_frames(len(clip)) for clip in clips]
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
    with seeded(seed, device):
        return model.decode(levels)[0, 0].float().cpu().numpy()

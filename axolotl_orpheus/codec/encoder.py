"""Encoding clips to SNAC codes in exact batches: every clip gets the codes it would get alone."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from snac import SNAC

from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.devices import exact_fp32
from axolotl_orpheus.layout import CONTEXT_FRAMES, SAMPLES_PER_FRAME, WINDOW_FRAMES, Codes, whole_frames

# Audio per batch when no batch size is set (on a GPU): the encoder holds about 21 MB of activations per
# second of audio, so about 7 GB, whatever the clips' length; a batch that does not fit is split in halves.
BATCH_SECONDS = 320


@dataclass
class MemoryLimit:
    """The fewest samples a batch held when the GPU ran out of memory: later batches stay below it instead of each
    failing once before being split. One per model, kept by whoever encodes with it (a call without one learns
    only within itself)."""

    samples: int | None = None

    def clips(self, frames: int, wanted: int) -> int:
        """How many clips of `frames` frames a batch may hold, of the `wanted`."""
        if self.samples is None:
            return wanted
        return max(1, min(wanted, (self.samples - 1) // (frames * SAMPLES_PER_FRAME)))


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


def _encode_batch(model: SNAC, clips: list[np.ndarray], frames: int, memory: MemoryLimit) -> list[Codes]:
    """Codes of clips padded to `frames` frames, in one batch, or in halves when the GPU runs out of memory (which
    `memory` learns)."""
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
        memory.samples = min(batch.size, memory.samples or batch.size)
        torch.cuda.empty_cache()
        half = len(clips) // 2
        return _encode_batch(model, clips[:half], frames, memory) + _encode_batch(model, clips[half:], frames, memory)
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
    model: SNAC,
    clips: list[np.ndarray],
    batch_size: int | None = None,
    window_frames: int = WINDOW_FRAMES,
    memory: MemoryLimit | None = None,
) -> list[Codes]:
    """SNAC codes (n, 2n, 4n per clip) of mono 24 kHz clips, in the order given.

    SNAC's encoder is non-causal, so zero-padding a clip to a longer one changes its last codes.
    Only clips of the same padded length share a batch, which makes batching exact: every clip gets
    the codes it would get alone (SNAC itself right-pads each clip to whole frames). A batch holds
    `batch_size` clips, or by default BATCH_SECONDS of audio. Clips longer than `window_frames` are
    encoded alone, window by window (see WINDOW_FRAMES). `memory`: what earlier calls learned of the GPU's memory.
    """
    memory = memory or MemoryLimit()
    n_frames = [whole_frames(len(clip)) for clip in clips]
    codes: list[Codes | None] = [None] * len(clips)
    by_length = sorted(range(len(clips)), key=n_frames.__getitem__)
    for frames, same_length in itertools.groupby(by_length, key=n_frames.__getitem__):
        same_length = list(same_length)
        if frames > window_frames:
            for row in same_length:
                codes[row] = _encode_windowed(model, clips[row], window_frames)
            continue
        size = memory.clips(frames, clips_per_batch(frames, batch_size))
        for start in range(0, len(same_length), size):
            rows = same_length[start : start + size]
            for row, row_codes in zip(rows, _encode_batch(model, [clips[row] for row in rows], frames, memory)):
                codes[row] = row_codes
    return codes  # type: ignore[return-value]

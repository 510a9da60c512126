"""Finding speech in long recordings with Silero VAD, streamed a block at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soxr
import torch
from tqdm import tqdm

from axolotl_orpheus import audio
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.recordings import cuts


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's threads set to `count` (None: as they are) for a while, then put back as they were."""
    threads = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_vad() -> torch.jit.ScriptModule:
    """Silero VAD's TorchScript model, from the weights the silero-vad package ships."""
    with torch_threads(None):  # importing silero_vad sets one thread for the whole process
        try:
            from silero_vad import load_silero_vad
        except ImportError as error:
            raise UserError(
                f"segment needs Silero VAD ({error}). To fix: pip install 'axolotl-orpheus[segment]'"
            ) from error
    return load_silero_vad()


def speech_windows(
    blocks: Iterable[np.ndarray], rate: int, vad: torch.jit.ScriptModule, progress: tqdm | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each 32 ms window's speech probability and energy (dB) in mono audio at `rate`, given a block at a time,
    and the frames read.

    The audio is resampled to 16 kHz as a stream and heard window by window, Silero's state carried across
    blocks: the windows are those of the whole audio at once, whatever the blocks (the last one padded with
    silence, as Silero's own timestamps pad it).
    """
    stream = None if rate == cuts.VAD_RATE else soxr.ResampleStream(rate, cuts.VAD_RATE, 1, "float32", "HQ")
    probabilities: list[float] = []
    energies: list[np.ndarray] = []
    pending = np.zeros(0, np.float32)  # 16 kHz samples short of a window
    frames = 0

    def hear(samples: np.ndarray, last: bool = False) -> None:
        nonlocal pending
        pending = np.concatenate([pending, samples])
        if last and len(pending) % cuts.WINDOW_SAMPLES:
            pending = np.pad(pending, (0, cuts.WINDOW_SAMPLES - len(pending) % cuts.WINDOW_SAMPLES))
        whole = len(pending) // cuts.WINDOW_SAMPLES * cuts.WINDOW_SAMPLES
        windows, pending = pending[:whole].reshape(-1, cuts.WINDOW_SAMPLES), pending[whole:]
        energies.append(10 * np.log10(np.mean(np.square(windows, dtype=np.float64), axis=1) + 1e-10))
        probabilities.extend(float(vad(window, cuts.VAD_RATE)) for window in torch.from_numpy(windows))

    vad.reset_states()
    # NaN or infinite samples: the first's and last's frames and their count. After the first, the rest of the
    # recording is only searched for more, to say where they all are.
    first = last = None
    count = 0
    # A window is too little work to share between threads, which then spend their time waiting on each other.
    with torch.inference_mode(), torch_threads(1):
        for block in blocks:
            (non_finite,) = np.nonzero(~np.isfinite(block))
            if len(non_finite):
                first = frames + int(non_finite[0]) if first is None else first
                last, count = frames + int(non_finite[-1]), count + len(non_finite)
            frames += len(block)
            if first is None:
                hear(block if stream is None else stream.resample_chunk(block))
            if progress is not None:
                progress.update(len(block) / rate)
        if first is not None:
            where = f"at {first / rate:.2f} s" if count == 1 else f"from {first / rate:.2f} s to {last / rate:.2f} s"
            raise audio.AudioError(f"{count} samples {where} are NaN or infinite", "non_finite_samples")
        hear(
            np.zeros(0, np.float32) if stream is None else stream.resample_chunk(np.zeros(0, np.float32), last=True),
            last=True,
        )
    return np.array(probabilities), np.concatenate(energies), frames


def find_clips(
    path: Path, vad: torch.jit.ScriptModule, min_seconds: float, max_seconds: float
) -> tuple[int, int, list[cuts.Span]]:
    """A recording's sample rate, frames and clip spans: its first pass."""
    rate = audio.audio_header(str(path)).rate
    with tqdm(desc=f"Finding speech in {path.name}", unit="s", leave=False, bar_format="{desc}: {n:.0f} s") as bar:
        probabilities, energies, frames = speech_windows(audio.mono_blocks(str(path)), rate, vad, bar)
    return rate, frames, cuts.plan_cuts(probabilities, energies, frames / rate, min_seconds, max_seconds)

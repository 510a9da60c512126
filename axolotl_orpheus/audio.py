"""Audio loading: decode a row's audio, downmix to mono, resample each clip from its own rate to 24 kHz.

We decode with soundfile instead of datasets' `Audio` decoding, which needs torchcodec and cannot load
beside a CPU torch (facts.md). soundfile reads wav, flac, ogg and mp3, integer or float samples.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile
import soxr

from axolotl_orpheus.layout import SAMPLES_PER_FRAME

SAMPLE_RATE = 24000  # SNAC 24 kHz: encode never resamples, so every clip must arrive at this rate
SILENCE_PEAK = 1e-4  # -80 dBFS
CLIPPING_LEVEL, CLIPPING_FRACTION = 0.999, 0.001


class AudioError(ValueError):
    """A clip that cannot be read; the message says why, the caller adds the row.

    `reason` is the short name the preprocessing report counts it under.
    """

    def __init__(self, message: str, reason: str, seconds: float = 0.0):
        super().__init__(message)
        self.reason = reason
        self.seconds = seconds  # of the audio, when it could be decoded

    def __reduce__(self):  # travels back from the encoding processes whole
        return AudioError, (str(self), self.reason, self.seconds)


def describe_source(source: Any) -> str:
    """A short name for a row's audio, for error messages: its path, or the size of its bytes."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes of audio>"
    if isinstance(source, dict):
        if source.get("path"):
            return str(source["path"])
        if source.get("bytes") is not None:
            return f"<{len(source['bytes'])} bytes of embedded audio>"
    return source if isinstance(source, str) and source else repr(source)


def resolve_path(path: str, base_dir: str | None) -> str:
    """A relative path names a file beside the dataset (metadata.csv's folder), as in an audiofolder."""
    if base_dir and not os.path.isabs(path):
        return os.path.join(base_dir, path)
    return path


def open_source(source: Any, base_dir: str | None = None) -> Any:
    """What soundfile should open for a row's audio: its bytes, or its file path (which must exist).

    `source` is what a row holds: {"bytes", "path"} from an undecoded `Audio` column (bytes win: the
    hub layout embeds them and the path is then only a name), a plain file path, or the bytes themselves.
    """
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if isinstance(source, dict) and source.get("bytes") is not None:
        return io.BytesIO(source["bytes"])
    if isinstance(source, dict) and source.get("path"):
        path = resolve_path(source["path"], base_dir)
    elif isinstance(source, str) and source:
        path = resolve_path(source, base_dir)
    else:
        raise AudioError(f"no audio in this row (got {source!r}); expected a file path or audio bytes", "no_audio")
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}", "missing_file")
    return path


def source_bytes(source: Any, base_dir: str | None = None) -> bytes:
    """The encoded bytes of a row's audio (the file's content for a path): what the codes cache is keyed by."""
    opened = open_source(source, base_dir)
    if isinstance(opened, io.BytesIO):
        return opened.getvalue()
    with open(opened, "rb") as handle:
        return handle.read()


def read_audio(source: Any, base_dir: str | None = None) -> tuple[np.ndarray, int]:
    """Decode one row's audio to float32 samples of shape (frames, channels) and its sample rate."""
    try:
        samples, rate = soundfile.read(open_source(source, base_dir), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot decode audio {describe_source(source)}: {exc}", "undecodable_audio") from exc
    return samples, rate


def audio_info(source: Any, base_dir: str | None = None) -> tuple[int, float]:
    """A row's sample rate and duration in seconds, from the file header alone (fast, for inspecting)."""
    try:
        info = soundfile.info(open_source(source, base_dir))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot decode audio {describe_source(source)}: {exc}", "undecodable_audio") from exc
    return info.samplerate, info.duration


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,): the mean of the channels, as datasets' own decoding downmixes."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float32 samples with soxr's high quality setting; a no-op at the target rate."""
    if rate == target_rate:
        return samples
    return soxr.resample(samples, rate, target_rate, quality="HQ")


def load_clip(source: Any, base_dir: str | None = None) -> np.ndarray:
    """A row's audio as mono float32 at 24 kHz, the input SNAC expects."""
    samples, rate = read_audio(source, base_dir)
    return resample(to_mono(samples), rate)


class Clip(NamedTuple):
    """A row's audio, checked and ready for SNAC."""

    samples: np.ndarray  # mono float32 at 24 kHz
    seconds: float  # as decoded, before resampling
    warnings: tuple[str, ...]  # kept, but worth a look (report.WARNING_REASONS)


def sample_warnings(samples: np.ndarray) -> tuple[str, ...]:
    magnitude = np.abs(samples)
    warnings = []
    if magnitude.max() < SILENCE_PEAK:
        warnings.append("silent_audio")
    if np.count_nonzero(magnitude >= CLIPPING_LEVEL) >= CLIPPING_FRACTION * len(samples):
        warnings.append("clipping")
    return tuple(warnings)


def load_checked_clip(source: Any, base_dir: str | None = None) -> Clip:
    """`load_clip`, refusing audio SNAC cannot encode: an AudioError names the reason (report.DROP_REASONS)."""
    samples, rate = read_audio(source, base_dir)
    samples = to_mono(samples)
    seconds = len(samples) / rate
    if len(samples) == 0:
        raise AudioError("the audio has no samples", "empty_audio")
    if not np.isfinite(samples).all():
        bad = np.count_nonzero(~np.isfinite(samples))
        raise AudioError(f"{bad} samples are NaN or infinite", "non_finite_samples", seconds)
    clip = resample(samples, rate)
    if len(clip) < SAMPLES_PER_FRAME:
        raise AudioError(f"the clip lasts {seconds * 1000:.0f} ms", "shorter_than_one_frame", seconds)
    return Clip(clip, seconds, sample_warnings(samples))


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit wav, the format every player opens; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, sample_rate, subtype="PCM_16")

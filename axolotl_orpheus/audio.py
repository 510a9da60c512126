"""Audio loading: decode a row's audio, downmix to mono, resample each clip from its own rate to 24 kHz.

We decode with soundfile instead of datasets' `Audio` decoding, which needs torchcodec, whose wheel needs FFmpeg
and CUDA libraries and cannot load beside a CPU build of torch. soundfile reads wav, flac, ogg and mp3, integer
or float samples.

Clips are decoded, downmixed and resampled a block at a time, so that memory holds the 24 kHz mono clip
and one block whatever the file's length, rate and channels. soxr's streaming resampler gives exactly the
samples of resampling the whole clip at once, whatever the blocks (tests/test_audio.py checks it).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import soundfile
import soxr

from axolotl_orpheus.layout import SAMPLES_PER_FRAME

SAMPLE_RATE = 24000  # SNAC 24 kHz: encode never resamples, so every clip must arrive at this rate
SILENCE_PEAK = 1e-4  # -80 dBFS
CLIPPING_LEVEL, CLIPPING_FRACTION = 0.999, 0.001
READ_BYTES = 1 << 20  # the cache key hashes a file this many bytes at a time
BLOCK_SAMPLES = 1 << 20  # decoded samples (frames x channels) held at a time: 4 MiB of float32


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
    if os.path.isdir(path):
        raise AudioError(f"{path} is a folder, not an audio file", "missing_file")
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}", "missing_file")
    return path


def _read_error(path: str, error: OSError) -> AudioError:
    """A file that failed to read; one deleted since open_source found it is missing, as if never there."""
    if isinstance(error, FileNotFoundError):
        return AudioError(f"audio file not found: {path}", "missing_file")
    return AudioError(f"cannot read audio file {path}: {error.strerror or error}", "unreadable_file")


def _open_file(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _read_error(path, exc) from exc


def _content(source: Any, base_dir: str | None) -> Iterator[bytes]:
    """The encoded bytes of a row's audio (the file's content for a path), a block at a time."""
    opened = open_source(source, base_dir)
    if isinstance(opened, io.BytesIO):
        yield opened.getvalue()
        return
    with _open_file(opened) as file:
        try:
            while block := file.read(READ_BYTES):
                yield block
        except OSError as exc:
            raise _read_error(opened, exc) from exc


def content_key(source: Any, base_dir: str | None = None) -> str:
    """The codes cache's key for a row's audio: a digest of its encoded bytes, hashed a block at a time so
    that a long file is never in memory whole (the digest of all the bytes at once, which caches hold)."""
    digest = hashlib.blake2b(digest_size=20)
    for block in _content(source, base_dir):
        digest.update(block)
    return digest.hexdigest()


class _SoundFile(soundfile.SoundFile):
    """soundfile's reader, reading straight on. Around every read of a seekable file soundfile seeks to the
    position it tracks, and a seek in the middle of an MP3 garbles what libsndfile (1.2.2) decodes next:
    read in blocks, MP3 turns to noise. So these reads never seek."""

    def seekable(self) -> bool:
        return False


class _AudioFile:
    """A row's audio opened with soundfile, which reads it through this object's readinto, seek and tell.

    They keep the OSError a read or seek raised: soundfile calls them from callbacks that cannot raise,
    and libsndfile would take an unreadable file for a short or an unrecognised one.
    """

    def __init__(self, source: Any, base_dir: str | None):
        self.source = source
        opened = open_source(source, base_dir)
        self.name = opened if isinstance(opened, str) else describe_source(source)
        self.file = opened if isinstance(opened, io.BytesIO) else _open_file(opened)
        self.error: OSError | None = None
        try:
            self.sound = self._checked(lambda: _SoundFile(self))
        except Exception:
            self.file.close()
            raise

    def __repr__(self) -> str:  # how soundfile's errors name the file
        return repr(self.name)

    def readinto(self, buffer: Any) -> int:
        try:
            return self.file.readinto(buffer)
        except OSError as exc:
            self.error = self.error or exc
            return 0  # the end of the file, to libsndfile; _checked raises the error

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self.file.seek(offset, whence)
        except OSError as exc:
            self.error = self.error or exc
            return -1

    def tell(self) -> int:
        return self.file.tell()

    def _checked(self, call: Callable[[], Any]) -> Any:
        """`call`'s result, or the AudioError for the read that failed within it, or for the audio it
        could not decode."""
        try:
            result = call()
        except RuntimeError as exc:  # soundfile's errors, LibsndfileError among them
            self._raise_read_error()  # a failed read, not audio soundfile cannot decode
            raise AudioError(f"cannot decode audio {describe_source(self.source)}: {exc}", "undecodable_audio") from exc
        self._raise_read_error()
        return result

    def _raise_read_error(self) -> None:
        if self.error is not None:
            raise _read_error(self.name, self.error) from self.error

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        """The decoded audio as float32 (frames, channels), `frames` at a time: the frames the header
        counts, from the start, as soundfile.read decodes them (its seek to the start included, after which
        MP3 decodes to the same last bits)."""
        self._checked(lambda: self.sound.seek(0))
        remaining = self.sound.frames
        while remaining > 0:
            block = self._checked(partial(self.sound.read, min(frames, remaining), dtype="float32", always_2d=True))
            if not len(block):  # fewer frames than the header said: a file cut short
                return
            remaining -= len(block)
            yield block

    def __enter__(self) -> _AudioFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.sound.close()
        self.file.close()


class Header(NamedTuple):
    """What a row's audio file says of itself, before any decoding."""

    rate: int
    frames: int  # per channel, at `rate`
    channels: int
    seconds: float


def audio_header(source: Any, base_dir: str | None = None) -> Header:
    """A row's sample rate, frames, channels and duration, from the file header alone (fast)."""
    with _AudioFile(source, base_dir) as audio:
        sound = audio.sound
        return Header(sound.samplerate, sound.frames, sound.channels, sound.frames / sound.samplerate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,): the mean of the channels, as datasets' own decoding downmixes."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def mono_blocks(source: Any, base_dir: str | None = None) -> Iterator[np.ndarray]:
    """A row's audio downmixed to mono float32 at its own rate (audio_header's), from the start, a block of
    about BLOCK_SAMPLES decoded samples at a time: memory holds one block whatever the file's length."""
    with _AudioFile(source, base_dir) as audio:
        for block in audio.blocks(max(1, BLOCK_SAMPLES // audio.sound.channels)):
            yield to_mono(block)


def resample(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float32 samples with soxr's high quality setting; a no-op at the target rate."""
    if rate == target_rate:
        return samples
    return soxr.resample(samples, rate, target_rate, quality="HQ")


class Clip(NamedTuple):
    """A row's audio, checked and ready for SNAC."""

    samples: np.ndarray  # mono float32 at 24 kHz
    seconds: float  # as decoded, before resampling
    warnings: tuple[str, ...]  # kept, but worth a look (report.WARNING_REASONS)
    peak: float = 0.0  # the largest magnitude of the mono samples at the file's own rate (1 is full scale)
    clipped: float = 0.0  # the share of those samples at full scale (CLIPPING_LEVEL or above)


class _Decoded(NamedTuple):
    clip: Clip
    non_finite: int  # samples that are NaN or infinite
    cut: bool  # stopped at max_samples: the clip may go on


def _decode(source: Any, base_dir: str | None, max_samples: int | None = None) -> _Decoded:
    """Decode, downmix and resample a row's audio a block at a time, gathering what the row checks need
    from the mono samples at the file's own rate; with `max_samples`, stop once that many are out."""
    with _AudioFile(source, base_dir) as audio:
        rate, channels = audio.sound.samplerate, audio.sound.channels
        stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", "HQ")
        no_samples = np.zeros(0, np.float32)
        pieces = [no_samples]  # np.concatenate needs one, for a file of no frames
        frames = clipped = non_finite = produced = 0
        peak, cut = 0.0, False
        for block in audio.blocks(max(1, BLOCK_SAMPLES // channels)):
            mono = to_mono(block)
            magnitude = np.abs(mono)
            frames += len(mono)
            peak = max(peak, float(magnitude.max()))
            clipped += int(np.count_nonzero(magnitude >= CLIPPING_LEVEL))
            non_finite += len(mono) - int(np.count_nonzero(np.isfinite(mono)))
            pieces.append(mono if stream is None else stream.resample_chunk(mono))
            produced += len(pieces[-1])
            if max_samples is not None and produced >= max_samples:
                cut = True
                break
        if stream is not None and not cut:
            pieces.append(stream.resample_chunk(no_samples, last=True))  # the samples soxr still holds
    warnings = []
    if peak < SILENCE_PEAK:
        warnings.append("silent_audio")
    if clipped >= CLIPPING_FRACTION * frames:
        warnings.append("clipping")
    clip = Clip(np.concatenate(pieces)[:max_samples], frames / rate, tuple(warnings), peak, clipped / max(frames, 1))
    return _Decoded(clip, non_finite, cut)


def load_clip(source: Any, base_dir: str | None = None) -> np.ndarray:
    """A row's audio as mono float32 at 24 kHz, the input SNAC expects (unchecked: it may be empty)."""
    return _decode(source, base_dir).clip.samples


def load_checked_clip(source: Any, base_dir: str | None = None, max_samples: int | None = None) -> Clip:
    """`load_clip`, refusing audio SNAC cannot encode: an AudioError names the reason (report.DROP_REASONS).

    With `max_samples`, at most the clip's first `max_samples` samples, decoding about a block of the file
    more than they need: exactly the start of the whole clip (soxr's stream emits only final samples), to
    probe a long clip without decoding it all. Its seconds, warnings and checks cover the part decoded.
    """
    decoded = _decode(source, base_dir, max_samples)
    clip = decoded.clip
    if clip.seconds == 0:
        raise AudioError("the audio has no samples", "empty_audio")
    if decoded.non_finite:
        raise AudioError(f"{decoded.non_finite} samples are NaN or infinite", "non_finite_samples", clip.seconds)
    if len(clip.samples) < SAMPLES_PER_FRAME and not decoded.cut:
        raise AudioError(f"the clip lasts {clip.seconds * 1000:.0f} ms", "shorter_than_one_frame", clip.seconds)
    return clip


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """A wav, 16-bit by default, the format every player opens; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, sample_rate, subtype=subtype)

"""Audio formats written as the audio arrives, in the bytes OpenAI's speech API returns, and its SSE events.

- pcm: raw signed 16-bit little-endian, 24 kHz mono, as OpenAI defines it;
- wav: the same after a header whose sizes say "unknown" (0xFFFFFFFF), as streamed WAV has it;
- mp3, opus: soundfile's encoders (LAME, libopus in Ogg), their bytes sent as soon as they are written;
- flac: soundfile's encoder too, but sent whole at the end: FLAC's first bytes hold its length, and a FLAC
  streamed with an unknown length is one soundfile cannot read.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import soundfile

from axolotl_orpheus.audio import SAMPLE_RATE

MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
FORMATS = tuple(MEDIA_TYPES)
SSE_MEDIA_TYPE = "text/event-stream"
UNKNOWN_SIZE = 0xFFFFFFFF
# soundfile's format, subtype and settings for the encoded formats. MP3 at a constant bitrate: with no Xing frame
# to say otherwise (see AudioWriter), decoders take the length from the first frame's bitrate.
_SOUNDFILE = {
    "mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT", "compression_level": 0.5}),
    "opus": ("OGG", "OPUS", {}),
    "flac": ("FLAC", "PCM_16", {}),
}
# MPEG-2 Layer III (24 kHz is an MPEG-2 rate) bitrates in kbit/s by the header's index.
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def pcm16(samples: np.ndarray) -> bytes:
    """Float audio in [-1, 1] as 16-bit little-endian PCM, clipped."""
    return np.rint(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono WAV header for audio of a length not known yet."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + (struct.pack("<I", UNKNOWN_SIZE))
    )


def mpeg2_frame_length(header: bytes) -> int | None:
    """The length in bytes of the MPEG-2 Layer III frame that starts with `header`, or None if it is not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xFE != 0xF2:  # sync, MPEG-2, Layer III
        return None
    bitrate, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if not 0 < bitrate < len(_MPEG2_L3_KBPS) or rate_index == 3:
        return None
    return 72000 * _MPEG2_L3_KBPS[bitrate] // (22050, 24000, 16000)[rate_index] + padding


class _Sink:
    """A file for soundfile to write into whose bytes leave as soon as they are written.

    libsndfile seeks back at close to fill in what a header says of the whole file (FLAC's and WAV's lengths,
    MP3's Xing frame); bytes that have left cannot change, so such writes are dropped.
    """

    def __init__(self) -> None:
        self.pending = bytearray()
        self.sent = 0  # bytes that have left
        self.position = 0

    def write(self, data) -> int:
        data = bytes(data)
        start, self.position = self.position, self.position + len(data)
        skip = max(self.sent - start, 0)
        offset = start + skip - self.sent
        if skip < len(data):
            if offset + len(data) - skip > len(self.pending):
                self.pending.extend(bytes(offset + len(data) - skip - len(self.pending)))
            self.pending[offset : offset + len(data) - skip] = data[skip:]
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self.sent + len(self.pending)
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: end}[whence] + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        return b""  # nothing written is read back when encoding

    def take(self, keep: int = 0) -> bytes:
        """The bytes written so far but not sent, less the last `keep`, now sent."""
        out = bytes(self.pending[: len(self.pending) - keep])
        del self.pending[: len(out)]
        self.sent += len(out)
        return out


class AudioWriter:
    """One response's audio: `write` float32 chunks at 24 kHz, get the bytes to send now; `close` gets the rest."""

    def __init__(self, format: str) -> None:
        self.format = format
        self.sink = self.file = None
        self.started = False
        if format in _SOUNDFILE:
            kind, subtype, settings = _SOUNDFILE[format]
            self.sink = io.BytesIO() if format == "flac" else _Sink()
            self.file = soundfile.SoundFile(self.sink, "w", SAMPLE_RATE, 1, format=kind, subtype=subtype, **settings)

    def write(self, samples: np.ndarray) -> bytes:
        samples = np.asarray(samples, dtype=np.float32)
        if self.file is None:
            header = b"" if self.started or self.format != "wav" else wav_header()
            self.started = True
            return header + pcm16(samples)
        self.file.write(samples)
        return self._ready()

    def close(self) -> bytes:
        if self.file is None:
            return b"" if self.started or self.format != "wav" else wav_header()
        self.file.close()
        if self.format == "flac":
            return self.sink.getvalue()
        return self._ready()

    def _ready(self) -> bytes:
        if self.format == "flac":
            return b""
        if self.format == "mp3" and not self.started:
            # LAME's first frame is a placeholder for the Xing frame that libsndfile writes over it at close,
            # which is too late for a stream: without it the frames are plain CBR MP3, which every decoder
            # reads, where a placeholder left in makes them stop short.
            if len(self.sink.pending) < 4:
                return b""
            length = mpeg2_frame_length(bytes(self.sink.pending[:4]))
            if length is not None:
                if len(self.sink.pending) < length:
                    return b""
                del self.sink.pending[:length]
                self.sink.sent += length
        self.started = True
        return self.sink.take()


def sse_event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_delta(audio: bytes) -> bytes:
    """OpenAI's `speech.audio.delta` event: a piece of the audio, base64."""
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})


def sse_done(input_tokens: int, output_tokens: int) -> bytes:
    """OpenAI's `speech.audio.done` event, with the tokens read and spoken."""
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}
    return sse_event({"type": "speech.audio.done", "usage": usage})

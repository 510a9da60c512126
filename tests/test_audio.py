"""Audio loading (axolotl_orpheus.audio): decode, downmix to mono, resample to 24 kHz.

Every clip is made here (a 440 Hz sine, or noise) and written with soundfile into tmp_path; nothing is
downloaded. Unreadable files are real ones of /proc that fail to read.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from axolotl_orpheus import audio
from axolotl_orpheus.audio import (
    AudioError,
    Header,
    audio_header,
    content_key,
    describe_source,
    load_checked_clip,
    load_clip,
    mono_blocks,
    resample,
    to_mono,
)

FREQ = 440.0
AMPLITUDE = 0.5
DURATION = 0.5
RATES = [16000, 22050, 24000, 44100, 48000]

# (soundfile format, subtype, file extension, lossless?)
FORMATS = {
    "wav-pcm16": ("WAV", "PCM_16", "wav", True),
    "wav-float": ("WAV", "FLOAT", "wav", True),
    "flac": ("FLAC", "PCM_16", "flac", True),
    "ogg-vorbis": ("OGG", "VORBIS", "ogg", False),
    "mp3": ("MP3", "MPEG_LAYER_III", "mp3", False),
}


def sine(rate: int, duration: float = DURATION) -> np.ndarray:
    t = np.arange(round(rate * duration)) / rate
    return (AMPLITUDE * np.sin(2 * np.pi * FREQ * t)).astype(np.float32)


def write_clip(path: Path, kind: str, rate: int, stereo: bool) -> np.ndarray:
    """Write the test sine (stereo: left = sine, right = -sine/2, whose channel mean is sine/4); return what
    the mono result should be, before any codec loss."""
    fmt, subtype, _, _ = FORMATS[kind]
    if fmt not in soundfile.available_formats() or subtype not in soundfile.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({soundfile.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    signal = sine(rate)
    data = np.stack([signal, -0.5 * signal], axis=1) if stereo else signal
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)
    return 0.25 * signal if stereo else signal


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# --- load_clip: format x rate x channels -----------------------------------------------------------------


@pytest.mark.parametrize("stereo", [False, True], ids=["mono", "stereo"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", list(FORMATS))
def test_load_clip_gives_24khz_mono_sine(tmp_path: Path, kind: str, rate: int, stereo: bool) -> None:
    """Any supported format, rate and channel count becomes 1-D float32 at 24 kHz of the right length,
    still a 440 Hz sine of the downmixed amplitude (exact waveform for lossless formats)."""
    _, _, ext, lossless = FORMATS[kind]
    path = tmp_path / f"clip.{ext}"
    written = write_clip(path, kind, rate, stereo)
    n = soundfile.info(str(path)).frames  # what the decoder yields; equals len(written) for lossless
    if lossless:
        assert n == len(written)

    clip = load_clip(str(path))

    assert clip.ndim == 1
    assert clip.dtype == np.float32
    assert abs(len(clip) - n * 24000 / rate) <= 1
    assert abs(dominant_frequency(clip, 24000) - FREQ) <= 3
    expected_rms = (0.25 if stereo else 1.0) * AMPLITUDE / np.sqrt(2)
    assert rms(clip) == pytest.approx(expected_rms, rel=0.002 if lossless else 0.1)
    # The same sine sampled at 24 kHz, away from the resampler's edges.
    t = np.arange(len(clip)) / 24000
    ideal = (0.25 if stereo else 1.0) * AMPLITUDE * np.sin(2 * np.pi * FREQ * t)
    middle = slice(240, len(clip) - 240)
    if lossless:
        assert np.max(np.abs(clip[middle] - ideal[middle])) < 2e-4
    else:  # codec noise: a small residual relative to the signal (a one-sample shift alone gives ~0.11)
        assert rms(clip[middle] - ideal[middle]) < 0.1 * rms(ideal[middle])


@pytest.mark.parametrize("rate", [44100, 48000])
def test_resampling_is_band_limited(tmp_path: Path, rate: int) -> None:
    """Downsampling to 24 kHz removes a 15 kHz tone (above the 12 kHz Nyquist; otherwise it would alias
    into the speech band) and keeps a 10 kHz tone at full level: a high quality resampler, not a quick one."""
    t = np.arange(rate // 2) / rate
    levels = {}
    for freq in (10000, 15000):
        path = tmp_path / f"tone{freq}.wav"
        soundfile.write(path, (AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="FLOAT")
        clip = load_clip(str(path))
        levels[freq] = 20 * np.log10(rms(clip[500:-500]) / (AMPLITUDE / np.sqrt(2)))
    assert abs(levels[10000]) < 0.05, levels
    assert levels[15000] < -80, levels


@pytest.mark.parametrize("kind", list(FORMATS))
def test_load_clip_at_24khz_is_bit_exact(tmp_path: Path, kind: str) -> None:
    """A 24 kHz mono clip is not resampled: load_clip returns exactly the samples soundfile decodes."""
    path = tmp_path / f"clip.{FORMATS[kind][2]}"
    write_clip(path, kind, 24000, stereo=False)
    decoded, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 24000
    clip = load_clip(str(path))
    assert clip.dtype == np.float32
    assert np.array_equal(clip, decoded)


@pytest.mark.parametrize("kind", ["wav-pcm16", "wav-float"])
def test_stereo_is_downmixed_to_channel_mean(tmp_path: Path, kind: str) -> None:
    """Stereo becomes the mean of the channels (left = sine, right = -sine/2 -> sine/4), not one channel or
    their sum."""
    path = tmp_path / "stereo.wav"
    quarter = write_clip(path, kind, 24000, stereo=True)
    decoded, _ = soundfile.read(str(path), dtype="float32")
    clip = load_clip(str(path))
    assert clip.shape == (len(quarter),)
    np.testing.assert_allclose(clip, quarter, atol=2 / 32768)
    np.testing.assert_allclose(clip, decoded.mean(axis=1), rtol=0, atol=1e-7)


def test_multichannel_mean(tmp_path: Path) -> None:
    """More than two channels are averaged too."""
    signal = sine(24000)
    path = tmp_path / "quad.wav"
    soundfile.write(path, np.stack([signal, signal, -signal, 0 * signal], axis=1), 24000, subtype="FLOAT")
    np.testing.assert_allclose(load_clip(str(path)), 0.25 * signal, atol=1e-7)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_empty_clip(tmp_path: Path, rate: int) -> None:
    """A file with no samples gives an empty float32 clip rather than a crash."""
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0, 1), np.float32), rate)
    clip = load_clip(str(path))
    assert clip.shape == (0,)
    assert clip.dtype == np.float32


# --- the shapes a row's audio can take, as the header and the block reader (segment's) read it --------------


@pytest.fixture
def stereo_wav(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A stereo 16 kHz float wav in tmp_path/clips/, and the samples soundfile reads from it."""
    (tmp_path / "clips").mkdir()
    path = tmp_path / "clips" / "a.wav"
    write_clip(path, "wav-float", 16000, stereo=True)
    samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return path, samples


def read_audio(source, base_dir: str | None = None) -> tuple[Header, np.ndarray]:
    """A row's audio as the package reads it at the file's own rate: its header, and its mono samples a block at a
    time, joined."""
    return audio_header(source, base_dir), np.concatenate([np.zeros(0, np.float32), *mono_blocks(source, base_dir)])


def check_read(result: tuple[Header, np.ndarray], expected: np.ndarray, rate: int = 16000) -> None:
    """The header counts the (frames, channels) `expected` has at `rate`; the samples are their channels' mean."""
    header, samples = result
    assert (header.rate, header.frames, header.channels) == (rate, *expected.shape)
    assert samples.dtype == np.float32
    assert np.array_equal(samples, to_mono(expected))


def test_read_audio_returns_frames_by_channels(stereo_wav) -> None:
    """The header counts every channel's frames at the file's own rate; the blocks are their mean, at that rate."""
    path, expected = stereo_wav
    check_read(read_audio(str(path)), expected)
    assert expected.shape == (8000, 2)
    mono = path.parent / "mono.wav"
    soundfile.write(mono, sine(22050), 22050)
    header, samples = read_audio(str(mono))
    assert (samples.shape, header.rate, header.channels) == ((11025,), 22050, 1)


@pytest.mark.parametrize("kind", list(FORMATS))
def test_read_audio_bytes_win_over_missing_path(tmp_path: Path, kind: str) -> None:
    """{"bytes", "path"}: embedded bytes are decoded (any format) even when the path does not exist."""
    path = tmp_path / f"clip.{FORMATS[kind][2]}"
    write_clip(path, kind, 22050, stereo=True)
    expected, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    source = {"bytes": path.read_bytes(), "path": f"does/not/exist.{FORMATS[kind][2]}"}
    check_read(read_audio(source, base_dir=str(tmp_path / "nowhere")), expected, rate=22050)


def test_read_audio_bytes_win_over_another_existing_file(tmp_path: Path, stereo_wav) -> None:
    """When both exist, the bytes are read, not the file the path names."""
    path, expected = stereo_wav
    other = tmp_path / "other.wav"
    soundfile.write(other, np.zeros(100, np.float32), 24000)
    check_read(read_audio({"bytes": path.read_bytes(), "path": str(other)}), expected)


def test_read_audio_dict_relative_path_uses_base_dir(tmp_path: Path, stereo_wav, monkeypatch) -> None:
    """{"bytes": None, "path": relative} is found beside the dataset (base_dir), not in the cwd."""
    _, expected = stereo_wav
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    check_read(read_audio({"bytes": None, "path": os.path.join("clips", "a.wav")}, base_dir=str(tmp_path)), expected)


def test_read_audio_string_relative_path_uses_base_dir(tmp_path: Path, stereo_wav, monkeypatch) -> None:
    """A plain relative path string is resolved against base_dir, not the cwd."""
    _, expected = stereo_wav
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    check_read(read_audio("clips/a.wav", base_dir=str(tmp_path)), expected)


def test_read_audio_relative_path_without_base_dir_uses_cwd(tmp_path: Path, stereo_wav, monkeypatch) -> None:
    """Without a base_dir a relative path is taken from the current directory."""
    _, expected = stereo_wav
    monkeypatch.chdir(tmp_path)
    check_read(read_audio("clips/a.wav"), expected)


def test_read_audio_absolute_path_ignores_base_dir(tmp_path: Path, stereo_wav) -> None:
    """An absolute path (string or dict) is used as is, whatever base_dir says."""
    path, expected = stereo_wav
    unrelated = str(tmp_path / "unrelated")
    check_read(read_audio(str(path.resolve()), base_dir=unrelated), expected)
    check_read(read_audio({"bytes": None, "path": str(path.resolve())}, base_dir=unrelated), expected)


# --- errors ---------------------------------------------------------------------------------------------


def test_audio_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch unreadable clips."""
    assert issubclass(AudioError, ValueError)


@pytest.mark.parametrize("as_dict", [False, True], ids=["string", "dict"])
def test_missing_file_names_the_resolved_path(tmp_path: Path, as_dict: bool) -> None:
    """A missing file raises AudioError naming the path that was looked for (base_dir included)."""
    source = {"bytes": None, "path": "clips/missing.wav"} if as_dict else "clips/missing.wav"
    expected_path = os.path.join(str(tmp_path), "clips/missing.wav")
    with pytest.raises(AudioError, match="not found") as info:
        read_audio(source, base_dir=str(tmp_path))
    assert expected_path in str(info.value)
    with pytest.raises(AudioError, match="not found"):
        load_clip(source, base_dir=str(tmp_path))


def test_directory_is_not_an_audio_file(tmp_path: Path) -> None:
    """A path naming a directory (even one named like a clip) is said to be a folder rather than passed to the
    decoder, and counted as a missing file."""
    (tmp_path / "x.wav").mkdir()
    for folder in (tmp_path, tmp_path / "x.wav"):
        with pytest.raises(AudioError, match=f"^{folder} is a folder, not an audio file$") as info:
            read_audio(str(folder))
        assert str(folder) in str(info.value) and info.value.reason == "missing_file"


@pytest.mark.parametrize("data", [b"not audio", b"", b"RIFF" + bytes(40)], ids=["text", "empty", "bad-riff"])
def test_undecodable_bytes(data: bytes) -> None:
    """Bytes that are not audio raise AudioError saying they cannot be decoded and how many bytes they were."""
    with pytest.raises(AudioError, match=rf"cannot decode audio <{len(data)} bytes"):
        read_audio({"bytes": data, "path": None})
    with pytest.raises(AudioError, match="cannot decode audio"):
        load_clip({"bytes": data, "path": None})


def test_undecodable_file_names_the_path(tmp_path: Path) -> None:
    """A file that exists but is not audio raises AudioError naming the file."""
    path = tmp_path / "fake.wav"
    path.write_bytes(b"this is not a wav file at all")
    with pytest.raises(AudioError, match="cannot decode audio") as info:
        read_audio({"bytes": None, "path": "fake.wav"}, base_dir=str(tmp_path))
    assert "fake.wav" in str(info.value)


def test_undecodable_bytes_name_their_path(tmp_path: Path) -> None:
    """Bad embedded bytes with a path are reported by that path, so the row can be found."""
    with pytest.raises(AudioError, match="cannot decode audio speaker1/0042.wav"):
        read_audio({"bytes": b"garbage", "path": "speaker1/0042.wav"})


@pytest.mark.parametrize(
    "source",
    [None, "", {}, {"bytes": None, "path": None}, {"bytes": None, "path": ""}, {"path": None}],
    ids=["None", "empty-string", "empty-dict", "both-None", "empty-path", "path-None"],
)
def test_no_audio_in_row(source) -> None:
    """A row without audio raises AudioError saying so and showing what it got."""
    with pytest.raises(AudioError, match="no audio in this row") as info:
        read_audio(source)
    assert repr(source) in str(info.value)
    with pytest.raises(AudioError, match="no audio in this row"):
        load_clip(source, base_dir="/tmp")


# --- describe_source ------------------------------------------------------------------------------------


def test_describe_source() -> None:
    """Error messages name a row's audio by its path, or by the size of its bytes when it has no path."""
    assert describe_source({"bytes": b"abc", "path": "clips/a.wav"}) == "clips/a.wav"
    assert describe_source({"bytes": None, "path": "clips/a.wav"}) == "clips/a.wav"
    assert describe_source({"bytes": b"abc", "path": None}) == "<3 bytes of embedded audio>"
    assert describe_source({"bytes": bytes(1234), "path": ""}) == "<1234 bytes of embedded audio>"
    assert describe_source("clips/a.wav") == "clips/a.wav"
    assert describe_source(None) == "None"


# --- files that exist but cannot be read ----------------------------------------------------------------

# Real files that fail to read even as root (where chmod 000 stops nothing): a write-only sysctl refuses
# to open for reading (EACCES), and the process's own memory at offset 0 is unmapped, so reading it fails
# (EIO; seeking to its end fails too, EINVAL).
WRITE_ONLY_FILE = "/proc/sys/vm/drop_caches"
FAILING_READS_FILE = "/proc/self/mem"
READS = {
    "content_key": content_key,
    "audio_header": audio_header,
    "mono_blocks": lambda source: list(mono_blocks(source)),
    "load_clip": load_clip,
    "load_checked_clip": load_checked_clip,
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("path", [WRITE_ONLY_FILE, FAILING_READS_FILE], ids=["permission-denied", "io-error"])
def test_unreadable_file_is_an_audio_error(path: str, read: str) -> None:
    """Every read of a row's audio (cache key, header, decode) turns an OSError into an AudioError naming the
    file and the OS's reason, instead of a raw OSError, or an 'undecodable' or empty clip that hides it."""
    if not os.path.isfile(path):
        pytest.skip(f"this system has no {path}")
    with pytest.raises(AudioError, match=f"^cannot read audio file {path}: ") as info:
        READS[read]({"bytes": None, "path": path})
    assert info.value.reason == "unreadable_file"
    if path == WRITE_ONLY_FILE:
        assert str(info.value).endswith(os.strerror(13))  # EACCES


def test_failing_read_names_the_os_error() -> None:
    """The OS's own words for a failed read reach the message: here an I/O error."""
    if not os.path.isfile(FAILING_READS_FILE):
        pytest.skip(f"this system has no {FAILING_READS_FILE}")
    with pytest.raises(AudioError, match=f"{FAILING_READS_FILE}: {os.strerror(5)}$"):  # EIO
        content_key(FAILING_READS_FILE)


@pytest.mark.parametrize("read", list(READS))
def test_file_gone_after_the_check_is_missing(tmp_path: Path, monkeypatch, read: str) -> None:
    """A file deleted between the existence check and the read counts as missing (the same fix: check the
    path), not as a raw FileNotFoundError. The check is made to pass for a file that is not there."""
    path = str(tmp_path / "gone.wav")
    monkeypatch.setattr(os.path, "isfile", lambda name: name == path or os.path.exists(name))
    with pytest.raises(AudioError, match=f"^audio file not found: {path}$") as info:
        READS[read](path)
    assert info.value.reason == "missing_file"


# --- content_key: the codes cache's key, read in blocks --------------------------------------------------


def old_audio_key(data: bytes) -> str:
    """The key cache.audio_key gave the whole bytes: existing caches are filed under it."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def test_content_key_is_a_pinned_digest() -> None:
    """The digest itself is fixed: a change of hash or size would orphan every cached entry."""
    assert content_key(b"axolotl-orpheus cache key") == "3e1a4e4e2105a34404ef55cd616bef05a6283c30"


@pytest.mark.parametrize("size", [0, 1, 4096, 4097, 3 * 4096 + 5])
def test_content_key_of_a_file_hashes_its_bytes(tmp_path: Path, monkeypatch, size: int) -> None:
    """Hashed a block at a time, a file gets the key of its whole content, whatever its size against the
    block size; so do the same bytes embedded in a row, or given by a relative path."""
    monkeypatch.setattr(audio, "READ_BYTES", 4096)
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "clip.wav").write_bytes(data)
    expected = old_audio_key(data)
    assert content_key(str(tmp_path / "clip.wav")) == expected
    assert content_key({"bytes": None, "path": "clip.wav"}, base_dir=str(tmp_path)) == expected
    assert content_key({"bytes": data, "path": "elsewhere.wav"}) == expected
    assert content_key(data) == expected


def test_content_key_errors_like_the_decoder(tmp_path: Path) -> None:
    """No audio and a missing file are the same AudioErrors as when decoding."""
    with pytest.raises(AudioError, match="no audio in this row"):
        content_key({"bytes": None, "path": None})
    with pytest.raises(AudioError, match="not found") as info:
        content_key("missing.wav", base_dir=str(tmp_path))
    assert info.value.reason == "missing_file"


# --- audio_header: the header alone ---------------------------------------------------------------------


def test_audio_header_gives_rate_frames_channels_seconds(tmp_path: Path) -> None:
    """From the header: the file's rate, frames, channels and duration; for a path or the bytes."""
    path = tmp_path / "clip.wav"
    soundfile.write(path, np.zeros((11025, 3), np.float32), 22050)
    header = audio_header("clip.wav", base_dir=str(tmp_path))
    assert header == Header(rate=22050, frames=11025, channels=3, seconds=0.5)
    assert audio_header(path.read_bytes()) == header


def test_audio_header_of_an_empty_file(tmp_path: Path) -> None:
    """A header of no frames says so (the caller rejects it as empty_audio before any decoding)."""
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0, 1), np.float32), 16000)
    assert audio_header(str(path)) == Header(16000, 0, 1, 0.0)


def test_audio_header_of_undecodable_bytes() -> None:
    with pytest.raises(AudioError, match="cannot decode audio") as info:
        audio_header(b"not audio")
    assert info.value.reason == "undecodable_audio"


# --- decoding in blocks: the samples of decoding whole --------------------------------------------------

SMALL_BLOCK = 10007  # decoded samples a block: a few seconds of audio become many blocks of odd sizes


def noise_file(path: Path, rate: int, seconds: float, channels: int = 3) -> None:
    samples = 0.3 * np.random.default_rng(rate).standard_normal((round(rate * seconds), channels))
    soundfile.write(path, samples.astype(np.float32), rate, subtype="FLOAT")


def one_shot(path: Path) -> np.ndarray:
    """The clip as soundfile decodes the whole file, downmixed, then resampled in one call."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(to_mono(samples), rate)


@pytest.mark.parametrize("seconds", [0.3, 4.1], ids=["short", "long"])
@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000, 192000])
def test_blocks_give_the_samples_of_decoding_whole(tmp_path: Path, monkeypatch, rate: int, seconds: float) -> None:
    """Downmixed and resampled (soxr's stream) a block at a time, a clip is bit-identical to the whole file
    downmixed and resampled at once; at 24 kHz, to the decoded channel mean."""
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", SMALL_BLOCK)
    path = tmp_path / "noise.wav"
    noise_file(path, rate, seconds)
    expected = one_shot(path)
    assert len(expected) == round(seconds * 24000)
    for clip in (load_clip(str(path)), load_checked_clip(str(path)).samples):
        assert clip.dtype == np.float32
        assert np.array_equal(clip, expected)


@pytest.mark.parametrize("kind", ["flac", "ogg-vorbis", "mp3"])
def test_blocks_of_compressed_audio(tmp_path: Path, monkeypatch, kind: str) -> None:
    """Compressed formats decode to the same samples a block at a time too (soundfile's own reads in
    blocks turn MP3 into noise after the first few)."""
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", SMALL_BLOCK)
    path = tmp_path / f"clip.{FORMATS[kind][2]}"
    write_clip(path, kind, 44100, stereo=True)
    assert np.array_equal(load_clip(str(path)), one_shot(path))


def test_clip_seconds_are_the_decoded_duration(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", SMALL_BLOCK)
    path = tmp_path / "noise.wav"
    noise_file(path, 44100, 2.5)
    assert load_checked_clip(str(path)).seconds == 2.5


def test_non_finite_samples_are_counted_in_every_block(tmp_path: Path, monkeypatch) -> None:
    """NaN and infinite samples in different blocks are all counted."""
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", SMALL_BLOCK)
    samples = 0.1 * np.ones(5 * SMALL_BLOCK, np.float32)
    samples[[10, 3 * SMALL_BLOCK + 1, -1]] = np.nan, np.inf, -np.inf
    path = tmp_path / "bad.wav"
    soundfile.write(path, samples, 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="^3 samples are NaN or infinite$") as info:
        load_checked_clip(str(path))
    assert (info.value.reason, info.value.seconds) == ("non_finite_samples", len(samples) / 48000)


def old_warnings(mono: np.ndarray) -> tuple[str, ...]:
    """The warning rules, on the whole mono clip at its own rate."""
    magnitude = np.abs(mono)
    silent = ("silent_audio",) if magnitude.max() < 1e-4 else ()
    clipping = ("clipping",) if np.count_nonzero(magnitude >= 0.999) >= 0.001 * len(mono) else ()
    return silent + clipping


@pytest.mark.parametrize(
    "loud, clipped",
    [(0, 0), (1, 0), (0, 99), (0, 100), (1, 100)],
    ids=["silent", "one-loud-sample", "under-clipping", "clipping", "loud-and-clipping"],
)
def test_warnings_gathered_over_blocks(tmp_path: Path, monkeypatch, loud: int, clipped: int) -> None:
    """Silence (over every block) and clipping (counted over all blocks, against the whole length) follow
    the rules on the whole mono clip, though the loud or clipped samples all sit in one late block; stereo
    is checked after the downmix, at the file's own rate."""
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", SMALL_BLOCK)
    n = 100000
    mono = np.full(n, 5e-5, np.float32)
    mono[n - loud - clipped : n - clipped] = 0.5
    mono[n - clipped :] = 1.0
    path = tmp_path / "clip.wav"
    soundfile.write(path, np.stack([mono, mono], axis=1), 48000, subtype="FLOAT")
    expected = old_warnings(mono)
    assert load_checked_clip(str(path)).warnings == expected
    assert ("silent_audio" in expected) == (loud + clipped == 0)
    assert ("clipping" in expected) == (clipped >= 100)


# --- the start of a clip only -------------------------------------------------------------------------


@pytest.mark.parametrize("max_samples", [1000, 24000, 50001])
@pytest.mark.parametrize("rate", [16000, 24000, 44100, 192000])
def test_prefix_is_the_start_of_the_whole_clip(tmp_path: Path, monkeypatch, rate: int, max_samples: int) -> None:
    """max_samples gives exactly the first samples of the whole clip (soxr's stream emits only final
    samples), decoding only a block or so more of the file than they need."""
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", SMALL_BLOCK)
    path = tmp_path / "noise.wav"
    noise_file(path, rate, 6.0)
    whole = load_checked_clip(str(path))
    prefix = load_checked_clip(str(path), max_samples=max_samples)
    assert np.array_equal(prefix.samples, whole.samples[:max_samples])
    block_seconds = SMALL_BLOCK // 3 / rate
    assert prefix.seconds <= max_samples / 24000 + 0.05 + block_seconds  # soxr's delay is a few ms
    assert prefix.seconds < whole.seconds


def test_prefix_longer_than_the_clip_is_the_clip(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    noise_file(path, 22050, 1.0)
    whole = load_checked_clip(str(path))
    prefix = load_checked_clip(str(path), max_samples=10 * 24000)
    assert np.array_equal(prefix.samples, whole.samples)
    assert prefix.seconds == whole.seconds


def test_short_prefix_of_a_long_clip_is_not_too_short(tmp_path: Path) -> None:
    """A prefix under one SNAC frame is what was asked for, not a clip shorter than a frame."""
    path = tmp_path / "noise.wav"
    noise_file(path, 48000, 1.0)
    assert len(load_checked_clip(str(path), max_samples=100).samples) == 100
    short = tmp_path / "short.wav"
    noise_file(short, 48000, 0.05)
    with pytest.raises(AudioError) as info:
        load_checked_clip(str(short), max_samples=100000)
    assert info.value.reason == "shorter_than_one_frame"


# --- memory: bounded by the output, not the file ---------------------------------------------------------

WIDE_RATE, WIDE_CHANNELS, WIDE_SECONDS = 192000, 8, 60
PEAK_RSS = """
import resource, sys
from axolotl_orpheus.audio import load_checked_clip
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
clip = load_checked_clip(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(clip.samples), (after - before) * 1024)
"""


def test_memory_stays_bounded_on_a_long_wide_file(tmp_path: Path) -> None:
    """A minute of 8 channels at 192 kHz decodes in a process whose peak memory grows by a small part of what
    decoding it whole as float32 holds: a block, and the 24 kHz mono clip and its pieces."""
    path = tmp_path / "wide.wav"
    t = np.arange(WIDE_RATE) / WIDE_RATE
    second = 0.1 * np.sin(2 * np.pi * 440 * t[:, None] * np.arange(1, WIDE_CHANNELS + 1))
    with soundfile.SoundFile(path, "w", WIDE_RATE, WIDE_CHANNELS, "PCM_16") as wav:
        for _ in range(WIDE_SECONDS):  # written a second at a time: the test holds no more either
            wav.write(second)
    whole_float32 = WIDE_SECONDS * WIDE_RATE * WIDE_CHANNELS * 4
    try:
        result = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, timeout=120
        )
    finally:
        path.unlink()
    assert result.returncode == 0, result.stderr
    samples, growth = map(int, result.stdout.split())
    assert samples == WIDE_SECONDS * 24000
    assert growth < whole_float32 / 8, f"peak memory grew by {growth / 2**20:.0f} MiB"

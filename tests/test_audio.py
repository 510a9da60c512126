"""Audio loading (axolotl_orpheus.audio): decode, downmix to mono, resample to 24 kHz.

Every clip is a 440 Hz sine made here and written with soundfile into tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from axolotl_orpheus.audio import AudioError, describe_source, load_clip, read_audio

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


# --- read_audio: the shapes a row's audio can take ------------------------------------------------------


@pytest.fixture
def stereo_wav(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A stereo 16 kHz float wav in tmp_path/clips/, and the samples soundfile reads from it."""
    (tmp_path / "clips").mkdir()
    path = tmp_path / "clips" / "a.wav"
    write_clip(path, "wav-float", 16000, stereo=True)
    samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return path, samples


def check_read(result: tuple[np.ndarray, int], expected: np.ndarray, rate: int = 16000) -> None:
    samples, got_rate = result
    assert got_rate == rate
    assert samples.dtype == np.float32
    assert samples.shape == expected.shape
    assert np.array_equal(samples, expected)


def test_read_audio_returns_frames_by_channels(stereo_wav) -> None:
    """read_audio keeps every channel, (frames, channels) at the file's own rate; mono is 2-D too."""
    path, expected = stereo_wav
    check_read(read_audio(str(path)), expected)
    assert expected.shape == (8000, 2)
    mono = path.parent / "mono.wav"
    soundfile.write(mono, sine(22050), 22050)
    samples, rate = read_audio(str(mono))
    assert (samples.shape, rate) == ((11025, 1), 22050)


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
    """A path naming a directory is reported as not found rather than passed to the decoder."""
    with pytest.raises(AudioError, match="not found") as info:
        read_audio(str(tmp_path))
    assert str(tmp_path) in str(info.value)


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

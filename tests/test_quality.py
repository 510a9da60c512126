"""DNSMOS with its real models (the speechmos wheel ships them): the batched judge against speechmos' own scorer,
noise heard as noise on the bundled speech, and the judge's users: `axolotl preprocess` with orpheus_min_dnsmos,
`check`, `segment --min-dnsmos` and the scored samples."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from datasets import load_from_disk

from axolotl_orpheus import audio
from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, demo_config, newest_prepared_dataset
from axolotl_orpheus.cli.main import main
from axolotl_orpheus.listen import quality
from axolotl_orpheus.prepare import screening
from segment_speed import bundled_speech, join

CLIPS = Path(str(BUNDLED_CLIPS))
NOISY_FLOOR = 2.2  # over every clean bundled clip's OVRL, under every one with white noise at 0 dB SNR


@pytest.fixture(scope="module")
def judge() -> quality.QualityJudge:
    return quality.QualityJudge("cpu")


def with_noise(clip: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """The clip plus white noise `snr_db` below its mean power (seeded)."""
    noise = np.random.default_rng(seed).standard_normal(len(clip)).astype(np.float32)
    noise *= np.sqrt(np.mean(clip**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return clip + noise


@pytest.fixture(scope="module")
def clean() -> list[np.ndarray]:
    """The bundled clips as they are trained on: mono, 24 kHz."""
    return [audio.load_clip(str(path)) for path in sorted(CLIPS.glob("*.wav"))]


def test_windows_are_speechmos_own(monkeypatch):
    """Where the judge's windows start, and how far it doubles a short clip, is what speechmos' own loop scores
    (its models stubbed out, its windowing run as it is), including the windows its arithmetic makes a sample short."""
    from speechmos import dnsmos

    class Heard:
        def __init__(self, outputs):
            self.outputs, self.inputs = outputs, []

        def run(self, _, feed):
            self.inputs.append(feed["input_1"][0])
            return [self.outputs]

    reference = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)
    monkeypatch.setattr(dnsmos.DNSMOS, "audio_melspec", lambda self, audio: np.zeros((900, 120)))
    for samples in (1, 2000, 16000, 40001, 144159, 144160, 160000, 176161, 17 * 16000 + 5, 30 * 16000 + 77):
        clip = np.linspace(-0.5, 0.5, samples, dtype=np.float32)
        reference.onnx_sess, reference.p808_onnx_sess = Heard(np.ones((1, 3))), Heard(np.ones((1, 1)))
        reference(clip, 16000, False)
        length, starts = quality.windows(samples)
        doubled = np.tile(clip, length // samples)
        assert len(doubled) == length
        heard = reference.onnx_sess.inputs
        assert len(heard) == len(starts) and len(starts) >= 1, samples
        for start, window in zip(starts, heard):
            np.testing.assert_array_equal(window, doubled[start : start + quality.WINDOW])
    assert len(quality.windows(17 * 16000)[1]) < int(17 - quality.WINDOW_SECONDS) + 1  # some are skipped


def test_batched_scores_equal_speechmos_one_window_at_a_time(judge, clean):
    """The judge, sharing P.835's first layers and P.808's spectrogram across windows and batching the rest, gives
    speechmos' scores within 1e-4: a clip of 1 window, one doubled twice into 3 windows, one of 11.5 s (2)."""
    from speechmos import dnsmos

    clips = [audio.resample(clean[index], audio.SAMPLE_RATE, quality.SAMPLE_RATE) for index in (2, 1)]
    clips.append(np.concatenate(clips * 3)[: 11 * 16000 + 8321])
    ours = judge.score(clips, quality.SAMPLE_RATE, progress=None)
    for clip, scores in zip(clips, ours):
        reference = dnsmos.run(clip, quality.SAMPLE_RATE)
        expected = [reference[name] for name in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")]
        np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)


def test_mel_filters_and_p808_input_are_librosas():
    import librosa

    np.testing.assert_allclose(
        quality.mel_filters(), librosa.filters.mel(sr=16000, n_fft=321, n_mels=120), rtol=0, atol=1e-7
    )
    window = (np.random.default_rng(0).standard_normal(quality.WINDOW) * 0.1).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=window[:-160], sr=16000, n_fft=321, hop_length=160, n_mels=120)
    expected = ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T
    np.testing.assert_allclose(quality.p808_features(window, quality.mel_filters()), expected, rtol=0, atol=1e-5)


def test_white_noise_lowers_the_overall_score(judge, clean):
    """Clean espeak-ng speech scores higher than the same speech with white noise at 10 dB SNR, and that higher
    than at 0 dB: per clip, and by at least 0.5 on average from clean to 10 dB."""
    noisy10 = [with_noise(clip, 10, seed) for seed, clip in enumerate(clean)]
    noisy0 = [with_noise(clip, 0, seed) for seed, clip in enumerate(clean)]
    scores = judge.score(clean + noisy10 + noisy0, audio.SAMPLE_RATE, progress=None)
    ovrl = np.array([score.ovrl for score in scores]).reshape(3, len(clean))
    assert (ovrl[0] > ovrl[1] + 0.25).all() and (ovrl[1] > ovrl[2] + 0.2).all(), ovrl
    assert ovrl[0].mean() - ovrl[1].mean() >= 0.5, ovrl
    assert ovrl[0].min() > NOISY_FLOOR > ovrl[2].max(), ovrl
    assert judge.score([np.zeros(0, np.float32)], audio.SAMPLE_RATE, progress=None) == [None]


@pytest.fixture(scope="module")
def noisy_folder(tmp_path_factory, clean) -> Path:
    """An audiofolder of the six bundled clips (24 kHz) and, after them, each with white noise at 0 dB SNR."""
    folder = tmp_path_factory.mktemp("noisy")
    with open(CLIPS / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    written = list(rows)
    for row, clip in zip(rows, clean):
        soundfile.write(folder / row["file_name"], clip, audio.SAMPLE_RATE, "FLOAT")
    for seed, (row, clip) in enumerate(zip(rows, clean)):
        name = f"noisy_{row['file_name']}"
        soundfile.write(folder / name, with_noise(clip, 0, seed), audio.SAMPLE_RATE, "FLOAT")
        written.append({**row, "file_name": name})
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["file_name", "text", "speaker"])
        writer.writeheader()
        writer.writerows(written)
    return folder


def test_preprocess_drops_the_noisy_rows_and_a_rerun_scores_nothing(
    tmp_path, axolotl, standins, noisy_folder, monkeypatch
):
    """orpheus_min_dnsmos through axolotl's own preprocess: exactly the noisy rows dropped, counted as low_quality
    with example rows, the OVRL distribution per dataset and speaker in the report; then, prepared again elsewhere,
    every score comes from the cache."""
    config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"])
    config.update(
        datasets=[{"path": str(noisy_folder), "type": "axolotl_orpheus.tts"}],
        orpheus_min_dnsmos=NOISY_FLOOR,
        shuffle_merged_datasets=False,
        val_set_size=0,
    )
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    axolotl("preprocess", path, tmp_path)

    prepared = newest_prepared_dataset(tmp_path / "prepared")
    report = json.loads((prepared / "orpheus_report.json").read_text())
    total = report["total"]
    assert total["rows_in"] == 12 and total["rows_out"] == len(load_from_disk(str(prepared))) == 6
    dataset = str(noisy_folder / "metadata.csv")
    assert total["dropped"] == {
        "low_quality": {"count": 6, "examples": [{"dataset": dataset, "row": row} for row in range(6, 11)]}
    }
    ovrl = total["dnsmos_ovrl"]
    assert ovrl["clips"] == 12 and ovrl["min"] < NOISY_FLOOR < ovrl["max"] and set(ovrl["speakers"]) == {"ada", "ben"}
    assert report["datasets"][0]["dnsmos_ovrl"] == ovrl

    def no_scoring(*args, **kwargs):
        raise AssertionError("a re-run scored a clip")

    monkeypatch.setattr(quality.QualityJudge, "__init__", no_scoring)
    config.update(dataset_prepared_path=str(tmp_path / "again"))
    path.write_text(yaml.safe_dump(config))
    axolotl("preprocess", path, tmp_path)
    again = json.loads((newest_prepared_dataset(tmp_path / "again") / "orpheus_report.json").read_text())["total"]
    assert again["dropped"] == total["dropped"] and again["dnsmos_ovrl"] == ovrl


def test_check_reports_each_clip_worst_first_with_a_plot(tmp_path, noisy_folder, capsys):
    """`check --no-transcripts`: the CSV worst first (the noisy clips), the JSON with everything, the PNG, and the
    summary's clips and hours under 2.5 and 3.0."""
    out = tmp_path / "check"
    main(["check", str(noisy_folder), "--no-transcripts", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    with open(out.with_suffix(".csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and all(row["file"].startswith("noisy_") for row in rows[:6])
    scores = [float(row["dnsmos_ovrl"]) for row in rows]
    assert scores == sorted(scores) and rows[0]["cer"] == ""
    report = json.loads(out.with_suffix(".json").read_text())
    summary = report["summary"]
    assert summary["under_2.5"]["clips"] >= 6 and summary["under_3"]["clips"] >= summary["under_2.5"]["clips"]
    assert set(summary["dnsmos_ovrl_by_speaker"]) == {"ada", "ben"} and report["transcripts"] is None
    assert all(row["peak_dbfs"] < 0 and row["clipped_share"] == 0 for row in report["rows"][6:])
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "under 2.5: " in printed and "under 3: " in printed


def test_check_with_transcripts_adds_each_clips_cer(tmp_path, standins, noisy_folder):
    from axolotl_orpheus.listen.asr import ASR
    from axolotl_orpheus.recordings.check import check_dataset
    from axolotl_orpheus.recordings.vad import torch_threads

    with torch_threads(1):  # the stand-in Whisper's work is tiny: a second thread on a shared runner only contends
        report = check_dataset(str(noisy_folder), "cpu", ASR(str(standins["asr"]), "cpu", "en"))
    assert all(math.isfinite(row["cer"]) and "transcript" in row for row in report["rows"])
    assert report["transcripts"]["summary"]["checked"] == 12


def test_segment_drops_a_noisy_stretch(tmp_path, judge):
    """`segment --min-dnsmos`: of a recording whose last three utterances sit in loud white noise, those three
    clips are dropped as low_quality, and each kept clip's OVRL is in metadata.csv, which `init` summarises."""
    from axolotl_orpheus.listen.asr import Transcript
    from axolotl_orpheus.recordings import segment

    class HearsTheTexts:  # each clip holds one utterance: the ASR's words are not what this test is about
        english_spelling: dict[str, str] = {}

        def __init__(self, texts: list[str]):
            self.texts = iter(texts)

        def transcribe(self, clips: list[np.ndarray], sample_rate: int) -> list[Transcript]:
            return [Transcript(next(self.texts), "en") for _ in clips]

    speech = bundled_speech()
    texts_and_clips = speech[:3] + [(text, with_noise(clip, 0, seed)) for seed, (text, clip) in enumerate(speech[3:])]
    path = tmp_path / "talk.wav"
    join(path, texts_and_clips, 24000, 1, [1.0] * 6)
    out = tmp_path / "voice"
    report = segment.segment_recordings(
        [str(path)],
        str(out),
        load_asr=lambda: HearsTheTexts([text for text, _ in texts_and_clips]),
        min_dnsmos=NOISY_FLOOR,
        judge=judge,
    )
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        kept = list(csv.DictReader(handle))
    assert [row["text"] for row in kept] == [text for text, _ in speech[:3]]
    assert all(float(row[quality.OVRL_COLUMN]) >= NOISY_FLOOR for row in kept)
    dropped = [clip for clip in report["dropped_clips"] if clip["reason"] == "low_quality"]
    assert [clip["text"] for clip in dropped] == [text for text, _ in speech[3:]]
    assert all(clip[quality.OVRL_COLUMN] < NOISY_FLOOR for clip in dropped)
    assert sorted(file.name for file in out.glob("*.wav")) == sorted(row["file_name"] for row in kept)
    assert report["hours"]["dropped"]["low_quality"] > 0

    from axolotl_orpheus.recordings.survey import survey

    assert f"DNSMOS OVRL ({quality.OVRL_COLUMN}): min " in survey(str(out)).summary()  # what `init` prints


def test_the_judge_takes_as_many_threads_as_torch():
    """Not every core in each process: torch's count is the one OMP_NUM_THREADS sets per process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        judge = quality.QualityJudge("cpu")
    finally:
        torch.set_num_threads(threads)
    sessions = [judge.first_layers, judge.last_layers, judge.p808]
    assert [session.get_session_options().intra_op_num_threads for session in sessions] == [3, 3, 3]


def test_scores_cache_reads_what_it_wrote_and_refuses_damage(tmp_path):
    cache = screening.scores_cache(tmp_path)
    entry = (3.1, 3.4, 4.0, 3.5, 2.25, 0.5, 0.0)
    cache.put("ab" * 20, entry)
    assert cache.get("ab" * 20) == entry and cache.get("cd" * 20) is None
    path = cache.path("ab" * 20)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1  # a flipped bit
    path.write_bytes(bytes(data))
    assert cache.get("ab" * 20) is None and cache.damaged == 1


def test_mistakes_are_refused_in_one_line(tmp_path, capsys):
    from axolotl_orpheus.args import OrpheusArgs
    from helpers import usage_error

    refused = usage_error(capsys, ["check", str(tmp_path / "nowhere"), "--no-transcripts"])
    assert f"cannot load the dataset {tmp_path / 'nowhere'}" in refused
    (tmp_path / "talk.wav").write_bytes(b"")
    refused = usage_error(capsys, ["segment", str(tmp_path / "talk.wav"), "--out", "voice", "--min-dnsmos", "7"])
    assert "--min-dnsmos 7: DNSMOS scores are 1 to 5" in refused
    with pytest.raises(ValueError, match="orpheus_min_dnsmos"):
        OrpheusArgs(orpheus_min_dnsmos=6)

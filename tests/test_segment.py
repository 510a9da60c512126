"""`axolotl-orpheus segment`: the cut planning on synthetic speech probabilities, the transcript alignment, and
the real Silero VAD and stand-in Whisper on the bundled speech joined into long recordings with pauses."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from axolotl_orpheus import audio
from axolotl_orpheus.cli.demo import newest_prepared_dataset
from axolotl_orpheus.cli.main import main
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.listen import scoring
from axolotl_orpheus.listen.asr import Transcript, Word
from axolotl_orpheus.recordings import cuts, segment
from axolotl_orpheus.recordings import vad as speech_finding
from helpers import usage_error
from segment_speed import Utterance, bundled_speech, join

W = cuts.WINDOW_SECONDS


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The stand-in Whisper's work is tiny: on a shared 2-core runner a second thread only contends (it ran the
    tests' transcriptions 6 to 15 times slower)."""
    with speech_finding.torch_threads(1):
        yield


# The cut planning, on speech probabilities and energies made up window by window.


def windows(*stretches: tuple[int, bool]) -> np.ndarray:
    """Speech probabilities for (windows, speech?) stretches."""
    return np.concatenate([np.full(count, 0.9 if speech else 0.05) for count, speech in stretches])


S = 31  # windows in about a second (0.992 s)


def plan(probabilities: np.ndarray, energies: np.ndarray | None = None, **bounds) -> list[cuts.Span]:
    energies = np.zeros(len(probabilities)) if energies is None else energies
    return cuts.plan_cuts(probabilities, energies, len(probabilities) * W, **bounds)


def assert_spans(spans: list[cuts.Span], expected: list[tuple[float, float, bool]]) -> None:
    np.testing.assert_allclose([span[:2] for span in spans], [span[:2] for span in expected], atol=1e-9)
    assert [span.too_short for span in spans] == [span[2] for span in expected]


def test_speech_lasts_from_a_high_probability_until_a_low_one():
    probabilities = np.array([0.1, 0.4, 0.6, 0.4, 0.36, 0.2, 0.45, 0.5, 0.34, 0.9])
    assert cuts.speech_mask(probabilities).tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 0, 1]


def test_clips_end_at_pauses_keeping_a_little_silence_and_the_pauses_inside_sentences():
    # 3 s of speech, a 0.32 s pause inside the sentence, 1 s more; a 1 s pause; 2 s.
    spans = plan(
        windows((2 * S, False), (3 * S, True), (10, False), (S, True), (S, False), (2 * S, True), (3 * S, False))
    )
    assert_spans(
        spans,
        [
            (2 * S * W - cuts.LEAD_SECONDS, (6 * S + 10) * W + cuts.TAIL_SECONDS, False),
            ((7 * S + 10) * W - cuts.LEAD_SECONDS, (9 * S + 10) * W + cuts.TAIL_SECONDS, False),
        ],
    )


def test_a_stretch_too_long_is_cut_at_its_longest_pause_then_at_its_quietest_window():
    # 8 s, a 0.1 s gap, 8 s, a 0.32 s gap, 8 s: over 20 s, cut in the 0.32 s gap; the clip after it starts
    # halfway through it, since 0.2 s would reach into the clip before.
    spans = plan(windows((S, False), (8 * S, True), (3, False), (8 * S, True), (10, False), (8 * S, True), (S, False)))
    assert_spans(
        spans,
        [
            (S * W - cuts.LEAD_SECONDS, (17 * S + 3) * W + cuts.TAIL_SECONDS, False),
            ((17 * S + 8) * W, (25 * S + 13) * W + cuts.TAIL_SECONDS, False),
        ],
    )

    # 30 s without a gap: cut before its quietest window, with no silence added at the cut.
    probabilities = windows((S, False), (30 * S, True), (S, False))
    energies = np.zeros(len(probabilities))
    energies[13 * S] = -40
    spans = plan(probabilities, energies)
    assert len(spans) == 2 and spans[0].end == spans[1].start == pytest.approx(13 * S * W)
    assert all(span.end - span.start <= 20 for span in spans)


def test_too_short_speech_joins_its_neighbour_across_the_shorter_pause_or_is_dropped():
    spans = plan(
        windows(
            (S, False),
            (3 * S, True),
            (25, False),
            (15, True),
            (15, False),
            (3 * S, True),
            (3 * S, False),
            (20, True),
            (3 * S, False),
        )
    )
    assert_spans(
        spans,
        [
            (S * W - 0.2, (4 * S) * W + 0.1, False),
            ((4 * S + 25) * W - 0.2, (7 * S + 55) * W + 0.1, False),  # 0.48 s of speech joined across 0.48 s, not 0.8 s
            ((10 * S + 55) * W - 0.2, (10 * S + 75) * W + 0.1, True),  # 0.64 s, 3 s from any other: dropped
        ],
    )
    assert plan(windows((S, False))) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 800), st.booleans()), min_size=1, max_size=30),
    st.floats(0.5, 3),
    st.floats(5, 25),
)
def test_clips_are_in_order_apart_within_bounds_and_hold_all_the_speech(stretches, min_seconds, max_seconds):
    probabilities = windows((S, False), *stretches)
    energies = np.random.default_rng(0).normal(-30, 5, len(probabilities))
    spans = plan(probabilities, energies, min_seconds=min_seconds, max_seconds=max_seconds)
    edges = np.array([[span.start, span.end] for span in spans]).ravel()
    assert np.all(np.diff(edges) >= -1e-9)  # in order, none overlapping
    for span in spans:
        if not span.too_short:
            assert min_seconds - 1e-9 <= span.end - span.start <= max_seconds + 1e-9
    speech = np.flatnonzero(cuts.speech_mask(probabilities)) * W + W / 2
    inside = [(edges[0::2] <= moment) & (moment <= edges[1::2]) for moment in speech]
    assert all(hits.sum() == 1 for hits in inside)  # every speech window in exactly one clip


# Aligning a known transcript with the words the ASR heard.


def test_alignment_pairs_words_through_substitutions_deletions_and_insertions():
    assert cuts.align_words(list("abcdef"), list("abdexf")).tolist() == [0, 1, -1, 2, 3, 5]
    assert cuts.align_words(list("abc"), []).tolist() == [-1, -1, -1]
    assert cuts.align_words(list("abc"), list("xbz")).tolist() == [0, 1, 2]
    assert cuts.align_words([], list("abc")).tolist() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=60), st.lists(st.sampled_from("abcdx"), max_size=60))
def test_alignment_makes_the_fewest_edits(known, heard):
    """Its pairs imply exactly the Levenshtein distance in edits, through the blocks the traceback recomputes."""
    pairs = cuts.align_words(known, heard)
    paired = pairs[pairs >= 0]
    assert np.all(np.diff(paired) > 0)  # in order, each heard word paired at most once
    substitutions = sum(known[i] != heard[j] for i, j in enumerate(pairs) if j >= 0)
    edits = substitutions + (len(known) - len(paired)) + (len(heard) - len(paired))
    assert edits == scoring.edit_distance(known, heard)


def heard(clip: int, *words: tuple[str, float, float]) -> list[cuts.HeardWord]:
    return [cuts.HeardWord(text, clip, start, end) for text, start, end in words]


def test_each_known_word_goes_to_the_clip_that_heard_it_and_unheard_ones_where_time_is_left():
    known = "Hello there, this is a short test. Good morning!".split()
    words = (
        heard(0, ("hello", 0.1, 0.4), ("there", 0.5, 0.9))  # clip 0 lasts 3 s: 2.1 s after "there"
        + heard(1, ("is", 0.5, 0.6), ("a", 0.6, 0.7), ("shot", 0.7, 1.0), ("test", 1.0, 1.4), ("um", 1.5, 1.6))
        + heard(3, ("morning", 0.5, 1.0))
    )
    texts = cuts.words_per_clip(known, words, [(0, 3.0), (0, 2.0), (0, 1.0), (0, 1.5)])
    # "shot" is "short" misheard a little; "this" (unheard) goes to clip 0, which has 2.1 s of speech left after
    # "there" against 0.5 s before "is" in clip 1; "Good" (aligned with "um", which is not it) to clip 2, 1 s
    # that no word accounts for, against 0.6 s after "test" and 0.5 s before "morning".
    assert texts == [["Hello", "there,", "this"], ["is", "a", "short", "test."], ["Good"], ["morning!"]]

    assert cuts.words_per_clip(known, [], [(0.2, 1.2), (0.2, 3.2)]) == [known[:2], known[2:]]  # nothing heard
    assert cuts.word_key("Don't!") == "dont"


# The real Silero VAD on the bundled speech, joined into long recordings with pauses and a little noise
# (benchmarks/segment_speed.py joins them, for the benchmark too).


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray]]:
    return bundled_speech()


@pytest.fixture(scope="module")
def talk(tmp_path_factory, speech) -> tuple[Path, list[Utterance]]:
    """12 utterances at 48 kHz in stereo, 0.6-1.2 s apart: about 40 s."""
    path = tmp_path_factory.mktemp("recordings") / "talk.wav"
    pauses = np.random.default_rng(1).uniform(0.6, 1.2, 12).tolist()
    return path, join(path, speech * 2, 48000, 2, pauses)


@pytest.fixture(scope="module")
def vad():
    return speech_finding.load_vad()


def test_clips_hold_whole_utterances_within_bounds_with_little_silence(talk, vad):
    path, utterances = talk
    rate, frames, spans = speech_finding.find_clips(path, vad, min_seconds=1, max_seconds=20)
    assert (rate, frames) == (48000, soundfile.info(path).frames)
    assert len(spans) == len(utterances) and not any(span.too_short for span in spans)
    for span, utterance in zip(spans, utterances):  # each utterance wholly inside its own clip, none cut through
        assert span.start <= utterance.start and utterance.end <= span.end, (span, utterance)
        assert utterance.start - span.start <= 0.25 and span.end - utterance.end <= 0.25  # about 0.2 s at most
        assert 1 <= span.end - span.start <= 20


def test_speech_longer_than_the_maximum_is_cut_at_its_longest_pause(tmp_path, speech, vad):
    path = tmp_path / "run-on.wav"
    pauses = [0.1, 0.1, 0.1, 0.35, 0.1, 0.1, 0.1, 0.8]  # none as long as a pause between sentences
    utterances = join(path, speech + speech[:2], 48000, 1, pauses)
    _, _, spans = speech_finding.find_clips(path, vad, min_seconds=1, max_seconds=12)
    assert len(spans) == 2
    assert utterances[3].end <= spans[0].end <= spans[1].start <= utterances[4].start  # in the 0.35 s pause


def test_the_speech_pass_reads_a_block_at_a_time_and_hears_what_the_whole_file_holds(talk, vad, monkeypatch):
    """Memory holds a block, not the recording: the windows heard through small blocks are those heard through
    big ones, bit for bit (Silero's state and the 16 kHz stream carry across blocks), and so are the clips cut."""
    path, _ = talk
    whole = speech_finding.speech_windows(audio.mono_blocks(str(path)), 48000, vad)
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 1 << 13)
    sizes: list[int] = []

    def counted(blocks):
        for block in blocks:
            sizes.append(len(block))
            yield block

    blocked = speech_finding.speech_windows(counted(audio.mono_blocks(str(path))), 48000, vad)
    assert max(sizes) == (1 << 13) // 2 and len(sizes) > 400  # stereo: half as many frames as samples
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)

    spans = [(100, 9000), (9000, 9001), (20000, 61000), (len(sizes) * 4096 - 5000, soundfile.info(path).frames)]
    mono = audio.to_mono(soundfile.read(path, dtype="float32", always_2d=True)[0])
    for (start, end), clip in zip(spans, segment.clip_samples(path, spans), strict=True):
        np.testing.assert_array_equal(clip, mono[start:end])


# The pipeline, with an ASR that says what each clip holds: real expectations for the plumbing around it.


class ScriptedASR:
    """Hears, clip after clip, the texts it is given (each clip holds one utterance), with even word times."""

    english_spelling: dict[str, str] = {}

    def __init__(self, texts: list[str]):
        self.texts = iter(texts)

    def transcribe(self, clips: list[np.ndarray], sample_rate: int) -> list[Transcript]:
        return [Transcript(next(self.texts), "en") for _ in clips]

    def transcribe_words(self, clip: np.ndarray, sample_rate: int) -> Transcript:
        text, seconds = next(self.texts), len(clip) / sample_rate
        words = text.split()
        times = np.linspace(0.2, seconds - 0.1, len(words) + 1)
        return Transcript(text, "en", [Word(word, times[i], times[i + 1]) for i, word in enumerate(words)])


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_known_transcript_is_split_among_the_clips_and_mismatches_are_dropped(tmp_path, talk):
    path, utterances = talk
    (tmp_path / "talk.txt").write_text("\n".join(u.text for u in utterances), encoding="utf-8")
    heard = [u.text for u in utterances]
    heard[2] = heard[2].replace(" a ", " ")  # a word unheard
    heard[4] = heard[4].replace("cup", "cap") + " um"  # one misheard, one heard that the text lacks
    heard[8] = "nothing like the text at all"
    out = tmp_path / "voice"
    report = segment.segment_recordings(
        [str(path)], str(out), transcript=str(tmp_path / "talk.txt"), load_asr=lambda: ScriptedASR(heard)
    )
    kept = rows(out)
    assert [row["text"] for row in kept] == [u.text for i, u in enumerate(utterances) if i != 8]
    assert {row["speaker"] for row in kept} == {"voice"} and {row["source"] for row in kept} == {str(path)}
    (mismatch,) = report["dropped_clips"]
    assert (mismatch["reason"], mismatch["text"], mismatch["heard"]) == (
        "transcript_mismatch",
        utterances[8].text,
        heard[8],
    )
    assert mismatch["cer"] > segment.DEFAULT_MAX_CER
    assert report["per_recording"][0]["transcript_words"] == sum(len(u.text.split()) for u in utterances)
    assert sorted(path.name for path in out.glob("*.wav")) == sorted(row["file_name"] for row in kept)
    for row, utterance in zip(kept[:3], utterances):
        assert float(row["start"]) <= utterance.start and utterance.end <= float(row["end"])
        clip, rate = soundfile.read(out / row["file_name"], dtype="float32")
        assert rate == 48000 and clip.ndim == 1  # the original rate, mono
        assert len(clip) == round(float(row["end"]) * rate) - round(float(row["start"]) * rate)


def test_without_a_transcript_clips_keep_what_was_heard_and_those_heard_empty_are_dropped(tmp_path, talk):
    path, utterances = talk
    heard = [u.text.upper() for u in utterances]
    heard[5] = ""
    report = segment.segment_recordings(
        [str(path)], str(tmp_path / "voice"), speaker="ada", load_asr=lambda: ScriptedASR(heard)
    )
    assert [row["text"] for row in rows(tmp_path / "voice")] == heard[:5] + heard[6:]
    assert [(clip["reason"], clip["heard"]) for clip in report["dropped_clips"]] == [("no_words", "")]
    hours = report["hours"]
    assert hours["kept"] + sum(hours["dropped"].values()) == pytest.approx(hours["recorded"], abs=1e-3)
    assert set(hours["dropped"]) == {"no_speech", "no_words"}


# The command, with the stand-in Whisper (random: its words are noise), then init and axolotl preprocess.


@pytest.fixture(scope="module")
def folder_of_recordings(tmp_path_factory, speech) -> Path:
    """A FLAC at 48 kHz in stereo, a wav at 22.05 kHz, a file that is not audio and a transcript for each."""
    folder = tmp_path_factory.mktemp("folder")
    join(folder / "chapter-1.flac", speech[:4], 48000, 2, [0.7, 0.9, 1.1, 0.8])
    join(folder / "chapter-2.wav", speech[4:], 22050, 1, [1.0, 0.6])
    (folder / "broken.wav").write_bytes(b"RIFF, but not a wav at all")
    for name, part in [("chapter-1", speech[:4]), ("chapter-2", speech[4:])]:
        (folder / f"{name}.txt").write_text(" ".join(text for text, _ in part), encoding="utf-8")
    return folder


def test_segment_command_transcribes_with_whisper_and_reports_the_bad_recording(
    tmp_path, standins, folder_of_recordings, capsys
):
    out = tmp_path / "voice"
    # The stand-in's text is noise, often empty: each clip is a row with its text, or dropped as heard empty; when
    # every clip is dropped the command writes the report, no metadata.csv, and ends with exit code 2.
    try:
        main(["segment", str(folder_of_recordings), "--out", str(out), "--asr-model", str(standins["asr"])])
        exit_code = 0
    except SystemExit as exited:
        exit_code = exited.code
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    report = json.loads((out / segment.REPORT_FILE).read_text())
    assert report["recordings"] == 3 and f"skipped {folder_of_recordings / 'broken.wav'}" in printed
    (bad,) = report["bad_recordings"]
    assert (bad["source"], bad["reason"]) == (str(folder_of_recordings / "broken.wav"), "undecodable_audio")
    assert [line["source"] for line in report["per_recording"]] == [
        str(folder_of_recordings / "chapter-1.flac"),
        str(folder_of_recordings / "chapter-2.wav"),
    ]
    kept = rows(out) if exit_code == 0 else []
    assert exit_code == 0 or ("every clip was dropped" in captured.err and not (out / "metadata.csv").exists())
    if kept:
        assert (out / "metadata.csv").read_text().splitlines()[0] == ",".join(segment.METADATA_COLUMNS)
    assert len(kept) + len(report["dropped_clips"]) == 6 and report["clips"] == len(kept)
    assert all(row["text"] for row in kept) and {c["reason"] for c in report["dropped_clips"]} <= {"no_words"}
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(row["file_name"] for row in kept)

    refused = usage_error(
        capsys, ["segment", str(folder_of_recordings), "--out", str(tmp_path / "other"), "--on-bad", "raise"]
    )
    assert re.search(r"broken\.wav.*--on-bad raise", refused)
    (out / "metadata.csv").write_text(",".join(segment.METADATA_COLUMNS) + "\n")  # a dataset already there
    assert "already holds a metadata.csv" in usage_error(
        capsys, ["segment", str(folder_of_recordings), "--out", str(out)]
    )


def test_segment_with_transcripts_then_init_and_preprocess_read_the_folder(
    tmp_path, axolotl, standins, folder_of_recordings, speech, capsys
):
    out = tmp_path / "voice"
    recordings = [str(folder_of_recordings / "chapter-1.flac"), str(folder_of_recordings / "chapter-2.wav")]
    # The stand-in hears noise: a threshold no text can miss keeps every clip with its known words.
    main(
        [
            "segment",
            *recordings,
            "--out",
            str(out),
            "--asr-model",
            str(standins["asr"]),
            "--language",
            "en",
            "--transcript",
            str(folder_of_recordings),
            "--max-cer",
            "1000",
        ]
    )
    kept = rows(out)
    assert list(kept[0]) == list(segment.METADATA_COLUMNS)
    for recording, part in zip(recordings, [speech[:4], speech[4:]]):
        texts = [row["text"] for row in kept if row["source"] == recording]
        assert " ".join(texts).split() == " ".join(text for text, _ in part).split()  # every word once, in order
        assert all(texts)
    report = json.loads((out / segment.REPORT_FILE).read_text())
    assert report["clips"] == len(kept) == 6 and report["dropped_clips"] == []
    assert {row["speaker"] for row in kept} == {"voice"}

    config = tmp_path / "finetune.yml"
    main(
        [
            "init",
            str(out),
            "--out",
            str(config),
            "--base-model",
            str(standins["model"]),
            "--snac-model",
            str(standins["snac"]),
        ]
    )
    assert "6 clips" in capsys.readouterr().out
    axolotl("preprocess", config, tmp_path)
    prepared = newest_prepared_dataset(tmp_path / "prepared")
    total = json.loads((prepared / "orpheus_report.json").read_text())["total"]
    assert (total["rows_in"], total["rows_out"], total["dropped"]) == (6, 6, {})
    assert set(total["speakers"]) == {"voice"}


# What a new user gets wrong, and what segment says to them.


def test_clip_names_are_unique_whatever_the_recordings_are_called(tmp_path, speech):
    """a.wav, x/a.wav and a-2.wav each get clip names of their own: no clip overwrites another's wav, and
    metadata.csv lists each once."""
    recordings = tmp_path / "recordings"
    for name in ("a.wav", "x/a.wav", "a-2.wav"):
        (recordings / name).parent.mkdir(parents=True, exist_ok=True)
        join(recordings / name, speech[:2], 24000, 1, [0.8, 0.8])
    out = tmp_path / "voice"
    report = segment.segment_recordings([str(recordings)], str(out), load_asr=lambda: ScriptedASR(["Words."] * 99))
    names = [row["file_name"] for row in rows(out)]
    assert report["clips"] == len(names) == len(set(names)) >= 3
    assert sorted(path.name for path in out.glob("*.wav")) == sorted(names)
    assert {row["source"] for row in rows(out)} == {str(recordings / n) for n in ("a.wav", "x/a.wav", "a-2.wav")}


def test_a_recording_without_speech_is_an_error_and_no_dataset(tmp_path, capsys):
    """Quiet noise alone: segment says there is no speech and writes no metadata.csv (a header without rows would
    fail init and preprocess later), exit code 2; a header-only metadata.csv is refused in one line by init's
    survey and by axolotl's loading through the plugin."""
    from axolotl_orpheus.errors import UserError
    from axolotl_orpheus.prepare.sources import point_at_rows
    from axolotl_orpheus.recordings import survey

    noise = tmp_path / "room.wav"
    soundfile.write(noise, np.random.default_rng(0).normal(0, 0.003, 5 * 16000).astype(np.float32), 16000)
    out = tmp_path / "voice"
    with pytest.raises(UserError, match=r"no speech found in 1 recording \(5.0 s\)"):
        segment.segment_recordings([str(noise)], str(out), load_asr=lambda: pytest.fail("no speech: no ASR"))
    assert not (out / "metadata.csv").exists() and (out / segment.REPORT_FILE).is_file()
    with pytest.raises(SystemExit) as exited:
        main(["segment", str(noise), "--out", str(tmp_path / "again")])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert exited.value.code == 2 and last_line.startswith("axolotl-orpheus segment: no speech found in 1 recording")

    (tmp_path / "header").mkdir()
    (tmp_path / "header" / "metadata.csv").write_text(",".join(segment.METADATA_COLUMNS) + "\n")
    with pytest.raises(UserError, match="metadata.csv has a header but no rows. To fix: add a row per clip"):
        survey.survey(str(tmp_path / "header"))
    with pytest.raises(UserError, match="has a header but no rows"):
        point_at_rows({"path": str(tmp_path / "header"), "type": "axolotl_orpheus.tts"}, "train")


def test_paths_the_user_got_wrong_are_named(tmp_path, speech, capsys):
    """--out naming a file, --out naming the folder of recordings, a recording that is not there: one line each,
    exit code 2, before any work."""
    from helpers import usage_error

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    join(recordings / "a.wav", speech[:1], 24000, 1, [0.8])
    (tmp_path / "notes.txt").write_text("not a folder")
    refused = usage_error(capsys, ["segment", str(recordings), "--out", str(tmp_path / "notes.txt")])
    assert f"--out {tmp_path / 'notes.txt'} is a file" in refused
    refused = usage_error(capsys, ["segment", str(recordings), "--out", str(recordings)])
    assert f"--out {recordings} is the folder of recordings" in refused
    refused = usage_error(capsys, ["segment", str(tmp_path / "typo.wav"), "--out", str(tmp_path / "voice")])
    assert f"no recording {tmp_path / 'typo.wav'}: no such file or folder" in refused
    assert not (tmp_path / "voice").exists()


def test_nan_samples_are_reported_where_they_are(tmp_path, speech, vad):
    samples = np.random.default_rng(0).normal(0, 0.01, 4 * 16000).astype(np.float32)
    samples[int(2.5 * 16000) : int(2.6 * 16000)] = np.nan
    soundfile.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=r"^1600 samples from 2.50 s to 2.60 s are NaN or infinite$"):
        speech_finding.find_clips(tmp_path / "nan.wav", vad, min_seconds=1, max_seconds=20)


def test_a_float_recording_louder_than_full_scale_keeps_its_samples(tmp_path, speech):
    """A float recording peaking above 1 is cut into 32-bit float clips holding its very samples (16 bits would
    clip them), and the report and summary say so; clips within full scale stay 16-bit."""
    loud = tmp_path / "loud.wav"
    join(tmp_path / "plain.wav", speech[:2], 24000, 1, [0.8, 0.8])
    plain = soundfile.read(tmp_path / "plain.wav", dtype="float32")[0]
    soundfile.write(loud, 3 * plain, 24000, subtype="FLOAT")
    out = tmp_path / "voice"
    report = segment.segment_recordings(
        [str(loud), str(tmp_path / "plain.wav")], str(out), load_asr=lambda: ScriptedASR(["Words."] * 99)
    )
    assert report["clips_above_full_scale"] == 2 and "2 clips peak above full scale" in segment.summary(report)
    for row in rows(out):
        info = soundfile.info(out / row["file_name"])
        clip = soundfile.read(out / row["file_name"], dtype="float32")[0]
        source = 3 * plain
        if row["source"] == str(loud):  # the very samples, where the report's rounded start puts them
            assert info.subtype == "FLOAT" and np.abs(clip).max() > 1
            start = round(float(row["start"]) * 24000)
            assert any(np.array_equal(clip, source[at : at + len(clip)]) for at in range(start - 30, start + 31))
        else:
            assert info.subtype == "PCM_16"


def test_a_whisper_that_cannot_time_words_is_refused_before_the_speech_pass(tmp_path, standins, monkeypatch):
    """--transcript needs Whisper's word times, which need alignment_heads in its generation config: a model
    without them is named with the fix at once, not after the speech pass in transformers' words."""
    import shutil

    from axolotl_orpheus.errors import UserError

    whisper = tmp_path / "whisper"
    shutil.copytree(standins["asr"], whisper)
    generation = json.loads((whisper / "generation_config.json").read_text())
    del generation["alignment_heads"]
    (whisper / "generation_config.json").write_text(json.dumps(generation))
    join(tmp_path / "a.wav", [], 24000, 1, [])
    (tmp_path / "a.txt").write_text("Some words.")
    monkeypatch.setattr(segment, "find_clips", lambda *args: pytest.fail("the speech pass ran"))
    with pytest.raises(UserError, match=f"the ASR model {whisper} cannot time words: .* no alignment_heads. To fix"):
        segment.segment_recordings(
            [str(tmp_path / "a.wav")],
            str(tmp_path / "voice"),
            transcript=str(tmp_path / "a.txt"),
            asr_model=str(whisper),
        )


def test_a_recording_that_cannot_be_read_is_named_in_one_sentence(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF, but not a wav at all")
    with pytest.raises(UserError) as stopped:
        segment.segment_recordings(
            [str(tmp_path / "broken.wav")], str(tmp_path / "voice"), on_bad="raise", load_asr=lambda: None
        )
    assert "Format not recognised. To fix:" in str(stopped.value)

"""Bad input, one kind per test: dropped and counted by reason (or a clear error), good rows unchanged."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile
from datasets import Dataset

from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.prepare.report import summarize
from axolotl_orpheus.tts import RowError
from helpers import CLIPS_DIR, prepare_report

# two short bundled clips (clip_04 has a duplicate frame), rows 0 and 2 of every case
GOOD = ["clip_04.wav", "clip_05.wav"]


def speech(seconds: float) -> np.ndarray:
    """Real speech of about the given length at 24 kHz: bundled clips end to end, cut."""
    from axolotl_orpheus.audio import load_clip

    clips = np.concatenate([load_clip(str(path)) for path in sorted(CLIPS_DIR.glob("*.wav"))])
    return clips[: int(seconds * SAMPLE_RATE)]


def write(path, samples, subtype="PCM_16"):
    soundfile.write(path, samples, SAMPLE_RATE, subtype=subtype)


# kind -> (how to make the bad row's file, its csv text, the reason, settings, kept as a warning?)
CASES = {
    "undecodable bytes": (lambda p: p.write_bytes(b"RIFF-but-not-really-audio"), "bad", "undecodable_audio", {}),
    "missing file": (lambda p: None, "bad", "missing_file", {}),
    "zero-length audio": (lambda p: write(p, np.zeros(0, np.float32)), "bad", "empty_audio", {}),
    "shorter than one frame": (lambda p: write(p, speech(0.05)), "bad", "shorter_than_one_frame", {}),
    "NaN samples": (
        lambda p: write(p, np.r_[speech(1.0), np.nan].astype(np.float32), "FLOAT"),
        "bad",
        "non_finite_samples",
        {},
    ),
    "inf samples": (
        lambda p: write(p, np.r_[speech(1.0), np.inf].astype(np.float32), "FLOAT"),
        "bad",
        "non_finite_samples",
        {},
    ),
    "missing text": (lambda p: write(p, speech(1.0)), "", "no_text", {}),
    "empty text": (lambda p: write(p, speech(1.0)), '"  "', "empty_text", {}),
    "longer than orpheus_max_seconds": (
        lambda p: write(p, speech(6.0)),
        "bad",
        "longer_than_max_seconds",
        {"orpheus_max_seconds": 4},
    ),
    "shorter than orpheus_min_seconds": (
        lambda p: write(p, speech(0.5)),
        "bad",
        "shorter_than_min_seconds",
        {"orpheus_min_seconds": 1},
    ),
    "more tokens than sequence_len": (
        lambda p: write(p, speech(6.0)),
        "bad",
        "longer_than_sequence_len",
        {"sequence_len": 400},
    ),
}
WARNINGS = {
    "all-silent audio": (lambda p: write(p, np.zeros(SAMPLE_RATE, np.float32)), "silent_audio"),
    "clipping": (lambda p: write(p, np.clip(20 * speech(1.0), -1, 1)), "clipping"),
}


@pytest.fixture(scope="module")
def good_rows(tokenizer, standins, tmp_path_factory):
    """The good rows alone: every case must keep exactly these."""
    folder = tmp_path_factory.mktemp("good")
    make_metadata(folder, None, "unused")
    rows, _ = prepare_report(tokenizer, folder / "metadata.csv", orpheus_snac_model=str(standins["snac"]))
    return rows["input_ids"]


def make_metadata(folder, make_bad, bad_text, speakers=("ada", "ada", "ada")):
    for name in GOOD:
        (folder / name).write_bytes((CLIPS_DIR / name).read_bytes())
    lines = [
        "file_name,text,speaker",
        f"{GOOD[0]},Good one.,{speakers[0]}",
        f"bad.wav,{bad_text},{speakers[1]}",
        f"{GOOD[1]},Good two.,{speakers[2]}",
    ]
    if make_bad is None:
        del lines[2]
    else:
        make_bad(folder / "bad.wav")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder / "metadata.csv"


def run(tokenizer, standins, path, **settings):
    return prepare_report(tokenizer, path, orpheus_snac_model=str(standins["snac"]), **settings)


@pytest.mark.parametrize("kind", CASES)
def test_a_bad_row_is_dropped_and_counted(kind, tmp_path, tokenizer, standins, good_rows):
    make_bad, text, reason, settings = CASES[kind]
    path = make_metadata(tmp_path, make_bad, text)
    rows, report = run(tokenizer, standins, path, **settings)
    assert rows["input_ids"] == good_rows
    summary = summarize([report])
    assert (summary["rows_in"], summary["rows_out"]) == (3, 2)
    assert summary["dropped"] == {reason: {"count": 1, "examples": [{"dataset": str(path), "row": 1}]}}
    assert summary["warnings"] == {}


@pytest.mark.parametrize("kind", CASES)
def test_a_bad_row_stops_the_run_when_asked(kind, tmp_path, tokenizer, standins):
    make_bad, text, reason, settings = CASES[kind]
    path = make_metadata(tmp_path, make_bad, text)
    with pytest.raises(
        RowError, match=rf"Orpheus dataset {path}, row 1 \(bad.wav\): .+\. To fix: .+orpheus_on_bad_row: skip"
    ):
        run(tokenizer, standins, path, orpheus_on_bad_row="raise", **settings)


def test_a_zero_length_clip_is_dropped_under_the_gpu_batching_rule(
    monkeypatch, tmp_path, tokenizer, standins, good_rows
):
    """On a GPU no batch size is set (batches hold codec.BATCH_SECONDS of audio, sized by each clip's frames):
    a header of 0 frames must be dropped as empty_audio, not divide by zero."""
    from axolotl_orpheus.prepare import encoding

    monkeypatch.setattr(encoding, "default_batch_size", lambda device: None)
    path = make_metadata(tmp_path, CASES["zero-length audio"][0], "bad")
    rows, report = run(tokenizer, standins, path)
    assert rows["input_ids"] == good_rows
    assert summarize([report])["dropped"] == {
        "empty_audio": {"count": 1, "examples": [{"dataset": str(path), "row": 1}]}
    }


@pytest.mark.parametrize("kind", WARNINGS)
def test_suspicious_audio_is_kept_with_a_warning(kind, tmp_path, tokenizer, standins, good_rows):
    make_bad, warning = WARNINGS[kind]
    path = make_metadata(tmp_path, make_bad, "Kept.")
    rows, report = run(tokenizer, standins, path, orpheus_on_bad_row="raise")
    assert [rows["input_ids"][0], rows["input_ids"][2]] == good_rows
    summary = summarize([report])
    assert (summary["rows_out"], summary["dropped"]) == (3, {})
    assert summary["warnings"] == {warning: {"count": 1, "examples": [{"dataset": str(path), "row": 1}]}}


def test_an_empty_speaker_is_dropped(tmp_path, tokenizer, standins, good_rows):
    path = make_metadata(tmp_path, lambda p: write(p, speech(1.0)), "Fine text.", speakers=("ada", "", "ada"))
    rows, report = run(tokenizer, standins, path)
    assert rows["input_ids"] == good_rows
    assert summarize([report])["dropped"] == {
        "empty_speaker": {"count": 1, "examples": [{"dataset": str(path), "row": 1}]}
    }


def test_text_that_is_not_a_string_is_dropped(tmp_path, tokenizer, standins):
    """A csv whose transcripts are all numbers loads as an int column."""
    (tmp_path / "a.wav").write_bytes((CLIPS_DIR / GOOD[0]).read_bytes())
    dataset = Dataset.from_dict({"file_name": ["a.wav"], "text": [42]})
    rows, report = prepare_report(
        tokenizer, tmp_path / "metadata.csv", dataset, orpheus_snac_model=str(standins["snac"])
    )
    assert len(rows) == 0
    assert summarize([report])["dropped"]["text_not_string"]["count"] == 1


def test_report_figures(tmp_path, tokenizer, standins, good_rows):
    """Hours, tokens per row, speakers and dedupe counts add up."""
    path = make_metadata(tmp_path, None, "unused")
    rows, report = run(tokenizer, standins, path, sequence_len=1000)
    every, _ = run(tokenizer, standins, path, orpheus_remove_duplicate_frames=False)
    summary = summarize([report])
    seconds = sum(soundfile.info(str(CLIPS_DIR / name)).duration for name in GOOD)
    assert summary["audio_hours_in"] == summary["audio_hours_out"] == pytest.approx(seconds / 3600, abs=1e-6)
    lengths = [len(ids) for ids in rows["input_ids"]]
    tokens = summary["tokens_per_row"]
    assert (tokens["min"], tokens["median"], tokens["max"], tokens["sequence_len"]) == (
        min(lengths),
        float(np.median(lengths)),
        max(lengths),
        1000,
    )
    assert sum(tokens["histogram"]["counts"]) == sum(summary["clip_seconds_histogram"]["counts"]) == 2
    assert tokens["histogram"]["edges"][-1] == 1000
    removed = (sum(len(ids) for ids in every["input_ids"]) - sum(lengths)) // 7
    assert summary["frames_removed_by_dedupe"] == removed > 0
    assert summary["speakers"] == {"ada": {"rows": 2, "hours": pytest.approx(seconds / 3600, abs=1e-6)}}


def test_raise_mode_stops_encoding_at_the_first_bad_clip(tmp_path, tokenizer, standins):
    """A clip found bad only when decoded (NaN samples) stops the run before the rest is encoded, not after
    hours of encoding: with one clip per batch, the first chunk of 4 clips in length order holds the bad
    (longest) clip, and none of the 6 good ones is encoded."""
    write(tmp_path / "bad.wav", np.r_[speech(3.0), np.nan].astype(np.float32), "FLOAT")
    goods = sorted(path.name for path in CLIPS_DIR.glob("*.wav"))
    for name in goods:
        (tmp_path / name).write_bytes((CLIPS_DIR / name).read_bytes())
    lines = ["file_name,text", "bad.wav,Bad.", *(f"{name},Good." for name in goods)]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "codes"
    with pytest.raises(RowError, match=r"row 0 \(bad.wav\): 1 samples are NaN or infinite"):
        run(tokenizer, standins, tmp_path / "metadata.csv", orpheus_on_bad_row="raise", orpheus_codes_cache=str(cache))
    assert len(goods) == 6 and list(cache.rglob("*.codes")) == []
    rows, _ = run(tokenizer, standins, tmp_path / "metadata.csv", orpheus_codes_cache=str(cache))
    assert len(rows) == 6 and len(list(cache.rglob("*.codes"))) == 6  # skip mode encodes them all


@pytest.mark.parametrize("dedupe", [False, True])
def test_a_clip_too_long_for_sequence_len_is_refused_before_it_is_encoded_whole(
    dedupe, tmp_path, tokenizer, standins, encoded
):
    """40 s of stereo 48 kHz speech against sequence_len 400 (55 frames at most). Without dedupe the header alone
    shows it cannot fit: nothing is encoded. With dedupe, only codes show how many frames a row keeps: its first
    110 frames (and 12 of context) are encoded, keep more than 55, and the rest is never decoded or encoded."""
    import soxr

    long = soxr.resample(np.tile(speech(8.0), 5), SAMPLE_RATE, 48000)
    soundfile.write(tmp_path / "bad.wav", np.stack([long, long], axis=1), 48000, subtype="PCM_16")
    (tmp_path / "metadata.csv").write_text("file_name,text\nbad.wav,Far too long.\n")
    rows, report = run(
        tokenizer, standins, tmp_path / "metadata.csv", sequence_len=400, orpheus_remove_duplicate_frames=dedupe
    )
    assert len(rows) == 0
    assert summarize([report])["dropped"]["longer_than_sequence_len"]["count"] == 1
    assert encoded == ([(110 + 12) * 2048] if dedupe else [])


def test_a_long_clip_that_dedupe_makes_fit_is_kept(tmp_path, tokenizer, standins, encoded):
    """20 s of silence holds far more frames than sequence_len 400 allows, but its frames repeat: the start alone
    does not show it too long, so it is encoded whole and kept (a silent_audio warning says why to look)."""
    write(tmp_path / "quiet.wav", np.zeros(20 * SAMPLE_RATE, np.float32))
    (tmp_path / "metadata.csv").write_text("file_name,text\nquiet.wav,Nothing said.\n")
    rows, report = run(tokenizer, standins, tmp_path / "metadata.csv", sequence_len=400)
    assert len(rows) == 1 and len(rows[0]["input_ids"]) <= 400
    assert summarize([report])["warnings"]["silent_audio"]["count"] == 1
    assert encoded == [(110 + 12) * 2048, 20 * SAMPLE_RATE]


def test_dedupe_removing_most_frames_is_a_warning_in_the_log_and_the_report(tmp_path, tokenizer, standins, caplog):
    """Speech never has most frames' first codes repeat; silence (or another model's weights) does: duplicate-frame
    removal dropping most frames is said in the log and the report, with what to check."""
    from axolotl_orpheus.prepare.report import summary_text

    for name in ("quiet-1.wav", "quiet-2.wav"):
        write(tmp_path / name, np.zeros(2 * SAMPLE_RATE, np.float32))
    (tmp_path / "metadata.csv").write_text("file_name,text\nquiet-1.wav,One.\nquiet-2.wav,Two.\n")
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.tts"):
        _, report = run(tokenizer, standins, tmp_path / "metadata.csv")
    summary = summarize([report])
    assert summary["frames_before_dedupe"] == 2 * 24 and summary["frames_removed_by_dedupe"] > 24
    removed = f"duplicate-frame removal dropped {summary['frames_removed_by_dedupe']} of 48 frames"
    assert removed in caplog.text and "check orpheus_snac_model" in caplog.text
    assert f"  warning: {removed}" in summary_text(summary)

    (tmp_path / "speech").mkdir()
    _, speech_report = run(tokenizer, standins, make_metadata(tmp_path / "speech", None, "unused"))
    assert "duplicate-frame removal" not in summary_text(summarize([speech_report]))


def test_a_folder_named_like_a_clip_is_called_a_folder_and_errors_end_in_one_full_stop(tmp_path, tokenizer, standins):
    path = make_metadata(tmp_path, lambda p: p.mkdir(), "bad")
    _, report = run(tokenizer, standins, path)
    assert summarize([report])["dropped"]["missing_file"]["count"] == 1
    with pytest.raises(RowError, match=rf"row 1 \(bad.wav\): {tmp_path / 'bad.wav'} is a folder, not an audio file\. "):
        run(tokenizer, standins, path, orpheus_on_bad_row="raise")

    (tmp_path / "undecodable").mkdir()
    path = make_metadata(tmp_path / "undecodable", lambda p: p.write_bytes(b"RIFF-but-not-really-audio"), "bad")
    with pytest.raises(RowError, match=r"Format not recognised\. To fix: "):
        run(tokenizer, standins, path, orpheus_on_bad_row="raise")


def test_a_dataset_of_no_rows_is_refused_in_one_line(tmp_path, tokenizer, standins):
    from axolotl_orpheus.errors import UserError

    path = make_metadata(tmp_path, None, "unused")
    empty = Dataset.from_dict({"file_name": [], "text": []})
    with pytest.raises(UserError, match=rf"^Orpheus dataset {path} has no rows. To fix: "):
        run(tokenizer, standins, path, dataset=empty)

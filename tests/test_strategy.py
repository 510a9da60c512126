"""The dataset strategy in-process: rows equal the reference recipe, options, columns, clear errors."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import soundfile

from axolotl_orpheus import layout
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.tts import RowError
from helpers import load_raw, prepare
from reference_recipe import reference_row


@pytest.fixture
def rows_for(tokenizer, standins):
    """prepare() with the stand-in tokenizer and SNAC."""
    return partial(prepare, tokenizer, orpheus_snac_model=str(standins["snac"]))


def reference_rows(snac_model, tokenizer, speech, metadata, speaker=True, dedupe=True):
    return [
        reference_row(snac_model, tokenizer, clip, row["text"], row["speaker"] if speaker else None, dedupe)
        for clip, row in zip(speech, metadata)
    ]


@pytest.mark.parametrize("layout_name", ["audiofolder", "parquet"])
def test_rows_equal_reference_recipe(
    layout_name, rows_for, audiofolder_24k, parquet_24k, tokenizer, snac_model, speech_24k, metadata
):
    """At 24 kHz every row equals the recipe's, token for token; labels == input_ids; mask all 1."""
    rows = rows_for(audiofolder_24k / "metadata.csv" if layout_name == "audiofolder" else parquet_24k)
    expected = reference_rows(snac_model, tokenizer, speech_24k, metadata)
    assert rows.column_names == ["input_ids", "attention_mask", "labels"]
    assert rows["input_ids"] == expected
    assert rows["labels"] == expected
    assert rows["attention_mask"] == [[1] * len(ids) for ids in expected]


def test_rows_without_speaker_column_use_the_text_alone(rows_for, parquet_24k, tokenizer, snac_model, speech_24k, metadata):
    dataset = load_raw(parquet_24k).remove_columns("speaker")
    rows = rows_for(parquet_24k, dataset)
    assert rows["input_ids"] == reference_rows(snac_model, tokenizer, speech_24k, metadata, speaker=False)


def test_keeping_duplicate_frames_keeps_every_frame(rows_for, parquet_24k, tokenizer, snac_model, speech_24k, metadata):
    """With dedupe off a row holds 7 tokens for every 2048 samples (rounded up), as the recipe's codes."""
    rows = rows_for(parquet_24k, orpheus_remove_duplicate_frames=False)
    assert rows["input_ids"] == reference_rows(snac_model, tokenizer, speech_24k, metadata, dedupe=False)
    for ids, clip in zip(rows["input_ids"], speech_24k):
        assert len(layout.speech_frames(ids)) == -(-len(clip) // layout.SAMPLES_PER_FRAME)


def test_dedupe_removes_frames_on_this_speech(rows_for, parquet_24k):
    """Guards the test above and the reference test: the stand-in SNAC yields some duplicate frames."""
    kept = sum(len(ids) for ids in rows_for(parquet_24k)["input_ids"])
    every = sum(len(ids) for ids in rows_for(parquet_24k, orpheus_remove_duplicate_frames=False)["input_ids"])
    assert kept < every


def test_train_on_text_false_ignores_the_prompt(rows_for, parquet_24k):
    rows = rows_for(parquet_24k, orpheus_train_on_text=False)
    for ids, labels in zip(rows["input_ids"], rows["labels"]):
        speech_start = ids.index(layout.START_OF_SPEECH)
        assert labels[: speech_start + 1] == [layout.IGNORE_INDEX] * (speech_start + 1)
        assert labels[speech_start + 1 :] == ids[speech_start + 1 :]


def test_renamed_columns(rows_for, parquet_24k):
    dataset = load_raw(parquet_24k).rename_columns({"audio": "wav", "text": "sentence", "speaker": "voice"})
    renamed = rows_for(
        parquet_24k, dataset, orpheus_audio_column="wav", orpheus_text_column="sentence", orpheus_speaker_column="voice"
    )
    assert renamed["input_ids"] == rows_for(parquet_24k)["input_ids"]


def test_wrong_column_names_list_the_columns(rows_for, parquet_24k):
    with pytest.raises(ValueError, match=r"no column orpheus_text_column='transcript'.*\['audio', 'text', 'speaker'\]"):
        rows_for(parquet_24k, orpheus_text_column="transcript")
    with pytest.raises(ValueError, match="orpheus_speaker_column='voice'"):
        rows_for(parquet_24k, orpheus_speaker_column="voice")


def test_any_format_rate_and_channel_count(rows_for, tmp_path, snac_model, metadata, audiofolder_24k):
    """flac, ogg, mp3 and wav; 16-48 kHz; stereo; int and float samples: each row encodes the clip
    resampled from its own rate, exactly as encoding that clip alone gives."""
    from axolotl_orpheus import codec
    from axolotl_orpheus.audio import load_clip

    speech, _ = soundfile.read(audiofolder_24k / metadata[0]["file_name"], dtype="float32")
    variants = [  # file name, sample rate, channels, soundfile subtype
        ("a.flac", 16000, 1, "PCM_16"),
        ("b.ogg", 44100, 2, "VORBIS"),
        ("c.mp3", 48000, 1, "MPEG_LAYER_III"),
        ("d.wav", 22050, 2, "FLOAT"),
        ("e.wav", 24000, 1, "PCM_24"),
    ]
    lines = ["file_name,text"]
    for name, rate, channels, subtype in variants:
        import soxr

        samples = soxr.resample(speech, SAMPLE_RATE, rate)
        if channels == 2:
            samples = np.stack([samples, 0.5 * samples], axis=1)
        soundfile.write(tmp_path / name, samples, rate, subtype=subtype)
        lines.append(f"{name},clip {name}")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")

    rows = rows_for(tmp_path / "metadata.csv", orpheus_remove_duplicate_frames=False)
    for (name, rate, _, _), ids in zip(variants, rows["input_ids"]):
        clip = load_clip(name, str(tmp_path))
        assert len(clip) == pytest.approx(len(speech), abs=SAMPLE_RATE * 0.06)  # mp3 adds encoder delay
        expected = layout.interleave(*codec.encode(snac_model, [clip])[0])
        np.testing.assert_array_equal(layout.speech_frames(ids), expected, err_msg=name)


def test_a_bad_row_names_the_dataset_row_and_file(rows_for, tmp_path, audiofolder_24k, metadata):
    (tmp_path / "good.wav").write_bytes((audiofolder_24k / metadata[0]["file_name"]).read_bytes())
    (tmp_path / "metadata.csv").write_text("file_name,text\ngood.wav,fine\nmissing.wav,gone\n")
    with pytest.raises(RowError, match=r"metadata.csv, row 1 \(missing.wav\): audio file not found: .*missing.wav"):
        rows_for(tmp_path / "metadata.csv")


def test_empty_text_is_a_clear_error(rows_for, tmp_path, audiofolder_24k, metadata):
    (tmp_path / "good.wav").write_bytes((audiofolder_24k / metadata[0]["file_name"]).read_bytes())
    (tmp_path / "metadata.csv").write_text('file_name,text\ngood.wav,fine\ngood.wav," "\n')
    with pytest.raises(RowError, match=r"row 1 \(good.wav\): text column 'text' holds ' ', not text"):
        rows_for(tmp_path / "metadata.csv")

"""The dataset strategy in-process: rows equal the reference recipe, options, columns, clear errors."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import soundfile

from axolotl_orpheus import layout
from axolotl_orpheus.audio import SAMPLE_RATE
from helpers import load_raw, prepare, prepare_report, reference_rows


@pytest.fixture
def rows_for(tokenizer, standins):
    """prepare() with the stand-in tokenizer and SNAC."""
    return partial(prepare, tokenizer, orpheus_snac_model=str(standins["snac"]))


@pytest.mark.parametrize(("layout_name", "cpu_kernels"), [("audiofolder", True), ("parquet", False)])
def test_rows_equal_reference_recipe(
    layout_name,
    cpu_kernels,
    rows_for,
    audiofolder_24k,
    parquet_24k,
    tokenizer,
    reference_codes,
    metadata,
    caplog,
):
    """At 24 kHz every row equals the recipe's, token for token; labels == input_ids; mask all 1. With SNAC's C
    kernels on CPU (where this machine can build them) and with torch's kernels (orpheus_cpu_kernels: false)."""
    with caplog.at_level("INFO", logger="axolotl_orpheus.codec"):
        rows = rows_for(
            audiofolder_24k / "metadata.csv" if layout_name == "audiofolder" else parquet_24k,
            orpheus_cpu_kernels=cpu_kernels,
        )
    assert ("on cpu: torch's kernels (orpheus_cpu_kernels: false)" in caplog.text) == (not cpu_kernels)
    expected = reference_rows(reference_codes, tokenizer, metadata)
    assert rows.column_names == ["input_ids", "attention_mask", "labels"]
    assert rows["input_ids"] == expected
    assert rows["labels"] == expected
    assert rows["attention_mask"] == [[1] * len(ids) for ids in expected]


def test_rows_without_speaker_column_use_the_text_alone(rows_for, parquet_24k, tokenizer, reference_codes, metadata):
    dataset = load_raw(parquet_24k).remove_columns("speaker")
    rows = rows_for(parquet_24k, dataset)
    assert rows["input_ids"] == reference_rows(reference_codes, tokenizer, metadata, speaker=False)


def test_keeping_duplicate_frames_keeps_every_frame(
    rows_for, parquet_24k, tokenizer, reference_codes, speech_24k, metadata
):
    """With dedupe off a row holds 7 tokens for every 2048 samples (rounded up), as the recipe's codes."""
    rows = rows_for(parquet_24k, orpheus_remove_duplicate_frames=False)
    assert rows["input_ids"] == reference_rows(reference_codes, tokenizer, metadata, dedupe=False)
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


def test_wrong_column_names_list_the_columns(rows_for, parquet_24k, encoded):
    with pytest.raises(
        ValueError, match=r"no text 'transcript' column. The dataset has columns \['audio', 'text', 'speaker'\]"
    ):
        rows_for(parquet_24k, orpheus_text_column="transcript")
    with pytest.raises(ValueError, match="no speaker 'voice' column"):
        rows_for(parquet_24k, orpheus_speaker_column="voice")
    assert encoded == []


def test_any_format_rate_and_channel_count(rows_for, tmp_path, stock_snac, metadata, audiofolder_24k):
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
    for (name, _, _, _), ids in zip(variants, rows["input_ids"]):
        clip = load_clip(name, str(tmp_path))
        assert len(clip) == pytest.approx(len(speech), abs=SAMPLE_RATE * 0.06)  # mp3 adds encoder delay
        expected = layout.interleave(*codec.encode(stock_snac, [clip])[0])
        np.testing.assert_array_equal(layout.speech_frames(ids), expected, err_msg=name)


def test_per_dataset_columns_and_voice(tokenizer, standins, parquet_24k, reference_codes, metadata):
    """message_property_mappings in a dataset entry: its own column names, and one voice for all its rows."""
    dataset = load_raw(parquet_24k).rename_columns({"audio": "wav", "text": "sentence"}).remove_columns("speaker")
    rows, report = prepare_report(
        tokenizer,
        parquet_24k,
        dataset,
        mappings={"audio": "wav", "text": "sentence", "voice": "tara"},
        orpheus_snac_model=str(standins["snac"]),
    )
    assert rows["input_ids"] == reference_rows(reference_codes, tokenizer, metadata, speaker="tara")
    assert list(report.speaker_rows) == ["tara"]


def test_a_tokenizer_without_the_orpheus_layout_fails_before_encoding(
    rows_for, parquet_24k, tokenizer, standins, encoded
):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.convert_tokens_to_ids = lambda token: 0  # as a tokenizer without Orpheus' custom tokens answers
    with pytest.raises(
        ValueError, match=r"does not have the Orpheus layout: <\|eot_id\|> is id 0, not 128009.*canopylabs"
    ):
        prepare(plain, parquet_24k, orpheus_snac_model=str(standins["snac"]))
    assert encoded == []


def test_a_snac_model_that_is_not_24khz_is_refused(rows_for, parquet_24k, tmp_path, standins, encoded):
    import json
    import shutil

    shutil.copytree(standins["snac"], tmp_path / "snac_32khz")
    config = json.loads((tmp_path / "snac_32khz" / "config.json").read_text())
    config.update(sampling_rate=32000, vq_strides=[8, 4, 2, 1])
    (tmp_path / "snac_32khz" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"32000 Hz model .* needs the 24 kHz model .*hubertsiuzdak/snac_24khz"):
        rows_for(parquet_24k, orpheus_snac_model=str(tmp_path / "snac_32khz"))
    assert encoded == []


def test_an_empty_speaker_column_name_asks_for_text_only_prompts(
    rows_for, parquet_24k, tokenizer, reference_codes, metadata
):
    rows = rows_for(parquet_24k, orpheus_speaker_column="")
    assert rows["input_ids"] == reference_rows(reference_codes, tokenizer, metadata, speaker=False)


def test_a_transcript_quoting_special_tokens_stays_text_in_the_row(rows_for, tmp_path, audiofolder_24k, tokenizer):
    """A transcript holding `<|eot_id|>` or `<custom_token_5>` is tokenized as its characters: between BOS and the
    prompt's end_of_text there is no Llama-3 special, Orpheus control or audio id, and the text reads back whole."""
    name = "clip_05.wav"
    (tmp_path / name).write_bytes((audiofolder_24k / name).read_bytes())
    text = "Type <|eot_id|> then <custom_token_5> and <laugh> now."
    (tmp_path / "metadata.csv").write_text(f'file_name,text,speaker\n{name},"{text}",ada\n')
    (ids,) = rows_for(tmp_path / "metadata.csv")["input_ids"]
    prompt_end = ids.index(layout.START_OF_SPEECH) - 3  # end_of_text, end_of_human, start_of_ai, start_of_speech
    assert ids[:2] == [layout.START_OF_HUMAN, layout.START_OF_TEXT] and ids[prompt_end] == layout.END_OF_TEXT
    assert max(ids[2:prompt_end]) < layout.START_OF_TEXT
    assert tokenizer.decode(ids[2:prompt_end]) == f"ada: {text}"

"""Data as users lay it out: csv cells as written, other recipes' speaker columns, data_files, split folders."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from axolotl.cli.config import load_cfg
from axolotl.prompt_strategies import load as load_strategy
from axolotl.utils.data.shared import generate_dataset_hash_from_config, load_dataset_with_config
from axolotl.utils.dict import DictDefault
from datasets import Audio, Dataset, Features, Value, load_from_disk

from axolotl_orpheus.layout import END_OF_TEXT
from axolotl_orpheus.plugin import OrpheusPlugin
from helpers import config_file, prepare_report, voice_folder


def prompts(rows: Dataset, tokenizer) -> list[str]:
    """Each row's prompt text, as tokenized between start_of_human's BOS and end_of_text."""
    return [tokenizer.decode(ids[1 : ids.index(END_OF_TEXT)], skip_special_tokens=True) for ids in rows["input_ids"]]


def prepare_as_axolotl(tmp_path: Path, standins, tokenizer, entry: dict, **settings):
    """Rows and report for one dataset entry: axolotl's config loading and loader, then the strategy."""
    cfg = load_cfg(str(config_file(tmp_path, standins, datasets=[entry], **settings)))
    loaded = cfg.datasets[0]
    strategy = load_strategy(loaded.type, tokenizer, cfg, loaded)
    return strategy.wrap_dataset(load_dataset_with_config(loaded, use_auth_token=False)), strategy.report


def test_csv_cells_are_read_as_written(tmp_path, standins, tokenizer, audiofolder_24k):
    """pandas reads NA, None, null, nan, #N/A... as missing and a numeric column with a gap as floats: a
    transcript is text, a speaker is the cell's text, and only an empty cell is missing."""
    folder = voice_folder(
        tmp_path / "voice",
        audiofolder_24k,
        [
            ("clip_01.wav", "NA", "1"),
            ("clip_02.wav", "None", "2"),
            ("clip_03.wav", "null", "1"),
            ("clip_04.wav", "nan", "2"),
            ("clip_05.wav", "#N/A", "01"),
            ("clip_06.wav", "", "2"),
            ("clip_01.wav", "N/A", ""),
        ],
    )
    before = sorted(folder.iterdir())
    rows, report = prepare_as_axolotl(
        tmp_path, standins, tokenizer, {"path": str(folder), "type": "axolotl_orpheus.tts"}
    )
    assert prompts(rows, tokenizer) == ["1: NA", "2: None", "1: null", "2: nan", "01: #N/A"]
    assert report.dropped == {"no_text": [5], "empty_speaker": [6]}
    assert sorted(folder.iterdir()) == before  # nothing written into the user's folder


def test_editing_the_csv_prepares_the_dataset_again(tmp_path, standins, audiofolder_24k):
    """The prepared-dataset hash follows the csv's content, so edited transcripts are never served stale."""
    folder = voice_folder(tmp_path / "voice", audiofolder_24k, [("clip_01.wav", "Hello.", "ada")])
    entry = {"path": str(folder), "type": "axolotl_orpheus.tts"}

    def prepared_hash() -> str:
        cfg = load_cfg(str(config_file(tmp_path, standins, datasets=[entry])))
        return generate_dataset_hash_from_config(cfg, cfg.datasets, cfg.tokenizer_config)

    first = prepared_hash()
    assert prepared_hash() == first
    voice_folder(folder, audiofolder_24k, [("clip_01.wav", "Hello there.", "ada")])
    assert prepared_hash() != first


def test_a_converted_csv_keeps_its_name_in_the_report_and_errors(tmp_path, standins, tokenizer, audiofolder_24k):
    folder = voice_folder(
        tmp_path / "voice", audiofolder_24k, [("clip_01.wav", "Hello.", "ada"), ("gone.wav", "Hi.", "ada")]
    )
    entry = {"path": str(folder), "type": "axolotl_orpheus.tts"}
    _, report = prepare_as_axolotl(tmp_path, standins, tokenizer, entry)
    assert report.dataset == str(folder / "metadata.csv")
    with pytest.raises(ValueError, match=rf"Orpheus dataset {folder / 'metadata.csv'}, row 1 \(gone.wav\)"):
        prepare_as_axolotl(tmp_path, standins, tokenizer, entry, orpheus_on_bad_row="raise")


def test_a_csv_with_a_row_longer_than_its_header_names_the_line(tmp_path, standins, tokenizer, audiofolder_24k):
    folder = voice_folder(
        tmp_path / "voice", audiofolder_24k, [("clip_01.wav", "Hello.", "ada"), ("clip_02.wav", "Hi", "there", "ada")]
    )
    with pytest.raises(ValueError, match=r"metadata.csv, line 3: 4 cells under a header of 3 columns"):
        prepare_as_axolotl(tmp_path, standins, tokenizer, {"path": str(folder), "type": "axolotl_orpheus.tts"})


def test_float_speakers_are_written_as_integers(tmp_path, standins, tokenizer, audiofolder_24k):
    """A numeric speaker column with a gap is float64 in parquet (and on the hub): 1.0 is speaker "1"."""
    names = ["clip_01.wav", "clip_02.wav", "clip_03.wav", "clip_04.wav"]
    features = Features({"audio": Audio(), "text": Value("string"), "speaker": Value("float64")})
    table = pa.table(
        {
            "audio": [{"bytes": (audiofolder_24k / name).read_bytes(), "path": name} for name in names],
            "text": ["One.", "Two.", "Three.", "Four."],
            "speaker": [1.0, 2.0, None, 1.5],
        },
        schema=features.arrow_schema,
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    rows, report = prepare_report(tokenizer, path, orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=True)
    assert prompts(rows, tokenizer) == ["1: One.", "2: Two.", "1.5: Four."]
    assert report.dropped == {"empty_speaker": [2]}
    assert set(report.speaker_rows) == {"1", "2", "1.5"}


def speaker_dataset(clips: Path, **columns) -> Dataset:
    return Dataset.from_dict(
        {"audio": [str(clips / "clip_01.wav"), str(clips / "clip_04.wav")], "text": ["One.", "Two."], **columns}
    )


@pytest.mark.parametrize("column", ["speaker_id", "source"])
def test_other_recipes_speaker_columns_are_used_and_said(
    tmp_path, standins, tokenizer, audiofolder_24k, column, caplog
):
    """The seed's recipe names its speaker column speaker_id, Unsloth's and canopy's source."""
    dataset = speaker_dataset(audiofolder_24k, **{column: ["ada", "ben"]})
    settings = {"orpheus_snac_model": str(standins["snac"]), "orpheus_codes_cache": True}
    with caplog.at_level("INFO", logger="axolotl_orpheus.tts"):
        rows, _ = prepare_report(tokenizer, audiofolder_24k, dataset, **settings)
    assert prompts(rows, tokenizer) == ["ada: One.", "ben: Two."]
    assert f"no 'speaker' column: the speakers are column {column!r}" in caplog.text
    # Still configurable: "" asks for text-only prompts, and a `speaker` column comes first.
    text_only = prepare_report(tokenizer, audiofolder_24k, dataset, orpheus_speaker_column="", **settings)[0]
    assert prompts(text_only, tokenizer) == ["One.", "Two."]
    both = speaker_dataset(audiofolder_24k, speaker=["cy", "di"], **{column: ["ada", "ben"]})
    assert prompts(prepare_report(tokenizer, audiofolder_24k, both, **settings)[0], tokenizer) == [
        "cy: One.",
        "di: Two.",
    ]


def test_preprocess_reads_split_folders_and_data_files_and_reports_each_split(
    tmp_path, axolotl, standins, audiofolder_24k, metadata
):
    """One `axolotl preprocess` of the layouts users have:
    - the hub's DIR/train/metadata.csv and DIR/test/metadata.csv, audio beside each: `path: DIR` reads the entry's
      split (datasets: train by default), a test_datasets entry with `split: test` the test folder;
    - csv named by `data_files` (with `path: csv`, or a folder and `ds_type`), audio resolved against its folder.
    test_datasets are saved apart with a report of their own; a row that axolotl's dataset_exact_deduplication
    drops after the strategy (row 0 of the train folder, listed twice) is counted, so rows_out is what was saved."""
    rows = [(r["file_name"], r["text"], r["speaker"]) for r in metadata]
    voice_folder(tmp_path / "voice" / "train", audiofolder_24k, [*rows[:4], rows[0]])
    voice_folder(tmp_path / "voice" / "test", audiofolder_24k, rows[4:])
    listed = [(name, f"{text} Listed.", speaker) for name, text, speaker in rows]
    voice_folder(tmp_path / "voice" / "lists", audiofolder_24k, listed, metadata="meta.csv")
    voice_folder(
        tmp_path / "voice" / "lists", audiofolder_24k, [(n, f"{t} Again.", s) for n, t, s in rows], metadata="more.csv"
    )
    config = config_file(
        tmp_path,
        standins,
        datasets=[
            {"path": "voice", "type": "axolotl_orpheus.tts"},
            {"path": "csv", "data_files": "voice/lists/meta.csv", "type": "axolotl_orpheus.tts"},
            {"path": "voice", "data_files": ["voice/lists/more.csv"], "ds_type": "csv", "type": "axolotl_orpheus.tts"},
        ],
        test_datasets=[{"path": "voice", "split": "test", "type": "axolotl_orpheus.tts"}],
        dataset_exact_deduplication=True,
    )
    axolotl("preprocess", config, tmp_path)

    reports = {}
    for path in (tmp_path / "prepared").glob("*/orpheus_report.json"):
        report = json.loads(path.read_text())
        saved = len(load_from_disk(str(path.parent)))
        reports[tuple(d["dataset"] for d in report["datasets"])] = (report, saved)
    train, train_saved = reports["voice/train/metadata.csv", "voice/lists/meta.csv", "voice/lists/more.csv"]
    test, test_saved = reports[("voice/test/metadata.csv",)]
    assert len(reports) == 2
    assert [(d["rows_in"], d["rows_out"]) for d in train["datasets"]] == [(5, 5), (6, 6), (6, 6)]
    assert (train["total"]["rows_in"], train["total"]["rows_out"], train_saved) == (17, 16, 16)
    assert train["total"]["dropped_by_axolotl"]["count"] == 1 and train["total"]["dropped"] == {}
    assert (test["total"]["rows_in"], test["total"]["rows_out"], test_saved) == (2, 2, 2)
    assert "dropped_by_axolotl" not in test["total"]


def test_split_folders_follow_the_entrys_split(tmp_path):
    """Without a split, a datasets entry reads train and a test_datasets entry test, as axolotl picks splits."""
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "metadata.jsonl").write_text('{"file_name": "a.wav", "text": "hi"}\n')
    entry = {"path": str(tmp_path), "type": "axolotl_orpheus.tts"}
    cfg = DictDefault({"datasets": [dict(entry)], "test_datasets": [dict(entry), {**entry, "split": "train[:2]"}]})
    OrpheusPlugin().register(cfg)
    read = [(e.path, e.split) for e in cfg.datasets + cfg.test_datasets]
    assert read == [
        (str(tmp_path / "train" / "metadata.jsonl"), "train"),
        (str(tmp_path / "test" / "metadata.jsonl"), "train"),  # a lone file's rows are its train split
        (str(tmp_path / "train" / "metadata.jsonl"), "train[:2]"),
    ]
    with pytest.raises(ValueError, match=r"no validation/metadata.csv .* split folders \['test', 'train'\]"):
        OrpheusPlugin().register(DictDefault({"datasets": [{**entry, "split": "validation"}]}))


def test_data_files_in_several_folders_are_refused(tmp_path):
    """Relative audio paths resolve against one folder, the data files'."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rows.jsonl").write_text('{"file_name": "a.wav", "text": "hi"}\n')
    files = [str(tmp_path / "a" / "rows.jsonl"), str(tmp_path / "b" / "rows.jsonl")]
    cfg = DictDefault({"datasets": [{"path": "json", "data_files": files, "type": "axolotl_orpheus.tts"}]})
    with pytest.raises(ValueError, match="data_files in several folders .* give each folder its own dataset entry"):
        OrpheusPlugin().register(cfg)

"""`axolotl-orpheus init` and `report`: a config that axolotl preprocess accepts as is, and a report with plots."""

from __future__ import annotations

import argparse

import pytest
import yaml
from axolotl.cli.config import load_cfg

from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, newest_prepared_dataset
from axolotl_orpheus.cli.main import main, parser
from helpers import voice_folder


def test_init_writes_a_config_that_preprocess_accepts_and_report_plots_it(tmp_path, axolotl, standins, capsys):
    out = tmp_path / "finetune.yml"
    main(
        [
            "init",
            str(BUNDLED_CLIPS),
            "--out",
            str(out),
            "--base-model",
            str(standins["model"]),
            "--snac-model",
            str(standins["snac"]),
        ]
    )
    printed = capsys.readouterr().out
    assert "6 clips" in printed and "22050 Hz x 6" in printed
    assert "columns: audio='file_name' text='text' speaker='speaker'" in printed
    assert "warning: only 6 readable clips: about 50 are needed to start" in printed
    assert "warning: speaker 'ada' has 3 clips; about 300 per speaker give the best results" in printed
    config = yaml.safe_load(out.read_text())
    assert "message_property_mappings" not in config["datasets"][0]  # the default columns need no mapping
    assert config["val_set_size"] == 0  # too few rows for a validation split

    axolotl("preprocess", out, tmp_path)  # as written; its paths are relative to where axolotl runs
    prepared = newest_prepared_dataset(tmp_path / "prepared")

    png = tmp_path / "report.png"
    main(["report", "--prepared", str(prepared), "--out", str(png)])
    printed = capsys.readouterr().out
    assert "rows in" in printed and "total" in printed and f"wrote {png}" in printed
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert (width, height) == (1600, 450)  # three panels at 16 x 4.5 inches, 100 dpi


def test_init_names_other_columns_and_the_voice(tmp_path, standins, audiofolder_24k, metadata, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    features = Features({"recording": Audio(), "transcription": Value("string")})
    recordings = [{"bytes": (audiofolder_24k / r["file_name"]).read_bytes(), "path": r["file_name"]} for r in metadata]
    parquet = tmp_path / "train.parquet"
    columns = {"recording": recordings, "transcription": [r["text"] for r in metadata]}
    table = pa.table(columns, schema=features.arrow_schema)
    pq.write_table(table, parquet)
    out = tmp_path / "voice.yml"
    main(
        [
            "init",
            str(parquet),
            "--voice",
            "tara",
            "--out",
            str(out),
            "--sequence-len",
            "200",
            "--base-model",
            str(standins["model"]),
        ]
    )
    printed = capsys.readouterr().out
    assert "6 clips are longer than about 2 s and will not fit sequence_len 200" in printed
    assert "24000 Hz x 6" in printed
    entry = yaml.safe_load(out.read_text())["datasets"][0]
    assert entry["message_property_mappings"] == {"audio": "recording", "text": "transcription", "voice": "tara"}
    cfg = load_cfg(str(out))
    assert cfg.datasets[0].message_property_mappings["voice"] == "tara"


def test_init_writes_values_that_read_back_as_given(tmp_path, standins, audiofolder_24k, metadata):
    """YAML reads an unquoted yes as true, 123 as a number and cuts a value at ` #`: init quotes what needs it."""
    folder = tmp_path / "my #1: voice"
    voice_folder(folder, audiofolder_24k, [(r["file_name"], r["text"]) for r in metadata], ("file_name", "text"))
    snac_model = "someone/snac #2: 24 kHz"
    for voice in ("yes", "123"):
        out = tmp_path / f"{voice}.yml"
        main(
            [
                "init",
                str(folder),
                "--voice",
                voice,
                "--out",
                str(out),
                "--base-model",
                str(standins["model"]),
                "--snac-model",
                snac_model,
            ]
        )
        assert yaml.safe_load(out.read_text())["datasets"][0]["path"] == str(folder)
        cfg = load_cfg(str(out))
        assert cfg.datasets[0].message_property_mappings["voice"] == voice
        assert (cfg.orpheus_snac_model, cfg.output_dir) == (snac_model, f"./outputs/{voice}")


def test_init_counts_speakers_by_the_cells_text(tmp_path, audiofolder_24k, metadata, capsys):
    """pandas would read speakers 1, 2, 01 and a gap as floats 1.0, 2.0, 1.0 and nan."""
    speakers = ["1", "1", "2", "2", "01", ""]
    rows = [(r["file_name"], r["text"], speaker) for r, speaker in zip(metadata, speakers)]
    folder = voice_folder(tmp_path / "voice", audiofolder_24k, rows, ("file_name", "text", "speaker"))
    main(["init", str(folder), "--out", str(tmp_path / "finetune.yml")])
    assert "clips per speaker: 1: 2, 2: 2, 01: 1, (one voice): 1" in capsys.readouterr().out


def test_init_voice_names_a_one_speaker_column_and_is_refused_for_several(
    tmp_path, standins, tokenizer, audiofolder_24k, metadata, capsys
):
    """`segment` writes a speaker column of one name: `init --voice tara` on it makes tara the voice of every row
    (the config says so), where it was silently ignored; on a column of several speakers it is refused."""
    from axolotl_orpheus import tts
    from axolotl_orpheus.args import FINGERPRINT_KEY
    from axolotl_orpheus.prepare.sources import point_at_rows
    from helpers import load_raw

    rows = [(r["file_name"], r["text"], "voice") for r in metadata]
    folder = voice_folder(tmp_path / "voice", audiofolder_24k, rows, ("file_name", "text", "speaker"))
    out = tmp_path / "tara.yml"
    main(["init", str(folder), "--voice", "tara", "--out", str(out), "--base-model", str(standins["model"])])
    written = out.read_text()
    assert "one voice named 'tara' (column 'speaker' says 'voice')" in written
    entry = yaml.safe_load(written)["datasets"][0]
    assert entry["message_property_mappings"] == {"speaker": "", "voice": "tara"}
    entry["message_property_mappings"][FINGERPRINT_KEY] = "test"
    point_at_rows(entry, "train")
    strategy = tts.load(tokenizer, {}, entry)
    assert strategy.columns(load_raw(folder / "metadata.csv")).voice == "tara"

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["init", str(audiofolder_24k), "--voice", "tara", "--out", str(tmp_path / "x.yml")])
    refused = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert exited.value.code == 2 and refused.startswith("axolotl-orpheus init: --voice tara: ")
    assert "names 2 speakers in its column 'speaker'" in refused
    assert not (tmp_path / "x.yml").exists()


def test_every_command_gives_each_option_help_and_shows_its_default(capsys):
    """One grammar: the commands in the user's order, and in each one's --help every option has a help text and
    shows its default (one without a default says in its help what happens instead)."""
    (commands,) = [action for action in parser()._actions if isinstance(action, argparse._SubParsersAction)]
    user_order = "segment init check check-transcripts report evaluate share serve speak decode cache demo"
    assert list(commands.choices) == user_order.split()
    for name, command in commands.choices.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        for action in command._actions:
            named = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{named} has no help"
            if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
                assert f"(default: {action.default})" in shown, named

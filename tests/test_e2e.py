"""axolotl's real `preprocess` and `train` commands on raw speech, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import soundfile
import yaml
from datasets import load_from_disk

from axolotl_orpheus import layout
from axolotl_orpheus.cli import decode_row, demo_config, newest_prepared_dataset
from reference_recipe import reference_row


def axolotl(command: str, config, tmp_path) -> str:
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    result = subprocess.run(
        [sys.executable, "-m", "axolotl.cli.main", command, str(config)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, f"axolotl {command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def test_preprocess_and_train_on_an_audiofolder_and_parquet(
    tmp_path, standins, audiofolder_24k, parquet_24k, tokenizer, snac_model, speech_24k, metadata
):
    config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], max_steps=3)
    config["datasets"] = [
        {"path": str(audiofolder_24k), "type": "axolotl_orpheus.tts"},  # a folder of wavs + metadata.csv
        {"path": str(parquet_24k), "type": "axolotl_orpheus.tts"},  # parquet with embedded audio bytes
    ]
    config["shuffle_merged_datasets"] = False
    path = tmp_path / "finetune.yml"
    path.write_text(yaml.safe_dump(config))

    axolotl("preprocess", path, tmp_path)
    prepared = newest_prepared_dataset(tmp_path / "prepared")
    rows = load_from_disk(str(prepared))
    expected = [reference_row(snac_model, tokenizer, clip, r["text"], r["speaker"]) for clip, r in zip(speech_24k, metadata)]
    assert rows["input_ids"] == expected + expected
    assert rows["labels"] == expected + expected

    log = axolotl("train", path, tmp_path)
    assert "train_loss" in log
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert "Loading prepared dataset from disk" in log  # train reused the rows preprocess wrote

    seconds = decode_row(prepared, 0, str(standins["snac"]), tmp_path / "row0.wav")
    samples, rate = soundfile.read(tmp_path / "row0.wav")
    assert rate == 24000
    assert len(samples) == len(layout.speech_frames(expected[0])) * layout.SAMPLES_PER_FRAME == seconds * 24000

"""axolotl's own `preprocess` and `train` commands on raw speech, as a user runs them (in this process: the
`axolotl` fixture; tests/test_demo.py runs them as processes)."""

from __future__ import annotations

import json

import soundfile
import yaml
from datasets import load_from_disk

from axolotl_orpheus import layout
from axolotl_orpheus.cli.demo import decode_row, demo_config, newest_prepared_dataset
from helpers import judge_options, reference_rows


def test_training_scores_each_evaluation_and_keeps_the_best_checkpoint(
    tmp_path, scored_training, standins, tokenizer, capsys
):
    """`orpheus_eval_samples` inside axolotl's real train (conftest's scored_training): every evaluation logs every
    eval_orpheus_* score, and metric_for_best_model: eval_orpheus_cer keeps the lowest even where the config says
    greater_is_better: true. Then `evaluate` scores a checkpoint on the prepared rows, whose voices it reads from
    their report."""
    import torch

    from axolotl_orpheus.cli.main import main as cli_main
    from axolotl_orpheus.listen.evaluation import METRICS

    log = scored_training.log
    # The judges' INFO lines reach axolotl's log, as the package's other lines do.
    assert f"ASR {standins['asr']} on cpu" in log and f"Speaker model {standins['speaker']} on cpu" in log

    model = scored_training.output_dir
    state = json.loads((model / "checkpoint-4" / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [0, 2, 4]  # axolotl evaluates before the first step too
    for entry in evaluations:
        assert {f"eval_{name}" for name in METRICS} <= set(entry)
        assert f"Orpheus: scored 2 samples at step {entry['step']} in " in log  # the cost, per evaluation
        scored = json.loads((model / "orpheus_samples" / f"step-{entry['step']}" / "metrics.json").read_text())
        assert scored["mean"]["orpheus_cer"] == entry["eval_orpheus_cer"]
        assert 1 <= entry["eval_orpheus_dnsmos"] == scored["mean"]["orpheus_dnsmos"] <= 5  # the real DNSMOS
        assert {sample["voice"] for sample in scored["samples"]} <= {"ada", "ben"}  # read back from the report
    saved = {entry["step"]: entry["eval_orpheus_cer"] for entry in evaluations if entry["step"] in (2, 4)}
    assert state["best_metric"] == min(saved.values())
    assert state["best_model_checkpoint"] == str(model / f"checkpoint-{min(saved, key=saved.get)}")
    training_args = torch.load(model / "checkpoint-4" / "training_args.bin", weights_only=False)
    assert training_args.greater_is_better is False and training_args.metric_for_best_model == "eval_orpheus_cer"

    prepared = scored_training.prepared
    out = tmp_path / "scores"
    cli_main(
        [
            "evaluate",
            "--model",
            str(model / "checkpoint-2"),
            "--prepared",
            str(prepared),
            "--rows",
            "2",
            "--max-new-tokens",
            "35",
            "--out",
            str(out),
        ]
        + judge_options(standins)
    )
    assert "checkpoint-2" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())["checkpoint-2"]
    prompts = [
        tokenizer.decode(ids[2 : ids.index(layout.END_OF_TEXT)])
        for ids in load_from_disk(str(prepared))["input_ids"][:2]
    ]
    assert [f"{sample['voice']}: {sample['text']}" for sample in report["samples"]] == prompts


def test_preprocess_and_train_on_an_audiofolder_and_parquet(
    tmp_path, axolotl, standins, audiofolder_24k, parquet_24k, tokenizer, reference_codes, metadata
):
    config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], max_steps=3)
    config["datasets"] = [
        {"path": str(audiofolder_24k), "type": "axolotl_orpheus.tts"},  # a folder of wavs + metadata.csv
        {"path": str(parquet_24k), "type": "axolotl_orpheus.tts"},  # parquet with embedded audio bytes
    ]
    config["shuffle_merged_datasets"] = False
    config["orpheus_sample_prompts"] = [{"voice": "ada", "text": "Hello there."}, {"text": "No voice."}]
    config["orpheus_sample_max_new_tokens"] = 70
    path = tmp_path / "finetune.yml"
    path.write_text(yaml.safe_dump(config))

    axolotl("preprocess", path, tmp_path)
    prepared = newest_prepared_dataset(tmp_path / "prepared")
    rows = load_from_disk(str(prepared))
    expected = reference_rows(reference_codes, tokenizer, metadata)
    assert rows["input_ids"] == expected + expected
    assert rows["labels"] == expected + expected

    report = json.loads((prepared / "orpheus_report.json").read_text())
    assert (report["total"]["rows_in"], report["total"]["rows_out"], report["total"]["dropped"]) == (12, 12, {})
    assert [d["dataset"] for d in report["datasets"]] == [str(audiofolder_24k / "metadata.csv"), str(parquet_24k)]

    log = axolotl("train", path, tmp_path)
    assert "train_loss" in log
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert f"Loading prepared dataset from disk at {prepared}" in log  # train reused the rows preprocess wrote
    samples = sorted((tmp_path / "model" / "orpheus_samples").rglob("*.wav"))
    assert [p.relative_to(tmp_path / "model" / "orpheus_samples").as_posix() for p in samples] == [
        "step-3/00-ada.wav",
        "step-3/01-text.wav",
    ]
    for sample in samples:
        info = soundfile.info(str(sample))
        assert info.samplerate == 24000 and info.frames > 0 and info.frames % 2048 == 0

    # Rows prepared under other orpheus_* settings are never reused: train prepares its own, from the codes
    # that preprocess cached (by default, under the datasets cache).
    relabelled = {**config, "orpheus_train_on_text": False, "max_steps": 1, "orpheus_sample_prompts": []}
    path.write_text(yaml.safe_dump(relabelled))
    log = axolotl("train", path, tmp_path)
    assert "Loading prepared dataset from disk" not in log
    assert log.count("Orpheus: 6 rows, 0 clips (0.0 min) to encode") == 2

    seconds = decode_row(prepared, 0, str(standins["snac"]), tmp_path / "row0.wav")
    samples, rate = soundfile.read(tmp_path / "row0.wav")
    assert rate == 24000
    assert len(samples) == len(layout.speech_frames(expected[0])) * layout.SAMPLES_PER_FRAME == seconds * 24000


def test_preprocess_is_deterministic_and_reports_bad_rows(tmp_path, axolotl, standins, audiofolder_24k, metadata):
    """Byte-identical prepared rows across runs and dataset_num_proc values; a missing file is counted."""
    import shutil

    folder = tmp_path / "voice"
    shutil.copytree(audiofolder_24k, folder)
    rows = (folder / "metadata.csv").read_text().splitlines()
    rows.insert(3, "missing.wav,This file is gone.,ada")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")

    prepared = []
    for run, num_proc in enumerate([1, 2]):
        config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], 1)
        config.update(datasets=[{"path": str(folder), "type": "axolotl_orpheus.tts"}], dataset_num_proc=num_proc)
        config["dataset_prepared_path"] = str(tmp_path / f"prepared-{run}")
        path = tmp_path / f"run-{run}.yml"
        path.write_text(yaml.safe_dump(config))
        log = axolotl("preprocess", path, tmp_path)
        prepared.append(newest_prepared_dataset(tmp_path / f"prepared-{run}"))
    assert "dropped missing_file: 1 (e.g. rows 2)" in log

    files = [sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()) for folder in prepared]
    assert files[0] == files[1] and "orpheus_report.json" in {f.name for f in files[0]}
    for name in files[0]:
        assert (prepared[0] / name).read_bytes() == (prepared[1] / name).read_bytes(), name

    report = json.loads((prepared[0] / "orpheus_report.json").read_text())["total"]
    assert (report["rows_in"], report["rows_out"]) == (len(metadata) + 1, len(metadata))
    missing = {"dataset": str(folder / "metadata.csv"), "row": 2}
    assert report["dropped"] == {"missing_file": {"count": 1, "examples": [missing]}}
    assert set(report["speakers"]) == {"ada", "ben"}


def test_shards_preprocessed_apart_make_up_the_whole(tmp_path, axolotl, standins, audiofolder_24k, metadata):
    """The multi-node recipe: each node prepares a shard (axolotl's shards / shards_idx) into one shared codes
    cache; the whole dataset then prepares from that cache alone, and its rows are the union of the shards'."""
    codes = tmp_path / "shared-codes"
    rows = {}
    shards = [("shard-0", {"shards": 2, "shards_idx": 0}), ("shard-1", {"shards": 2, "shards_idx": 1}), ("whole", {})]
    for name, shard in shards:
        config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], 1)
        config.update(
            datasets=[{"path": str(audiofolder_24k), "type": "axolotl_orpheus.tts", **shard}],
            dataset_prepared_path=str(tmp_path / name),
            orpheus_codes_cache=str(codes),
        )
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(config))
        log = axolotl("preprocess", path, tmp_path)
        # The package's INFO lines reach axolotl's log: which SNAC path runs, where a shard encodes.
        assert (f"SNAC {standins['snac']} on cpu: " in log) == (name != "whole"), log[-3000:]
        rows[name] = list(load_from_disk(str(newest_prepared_dataset(tmp_path / name)))["input_ids"])
    assert "Orpheus: 6 rows, 0 clips (0.0 min) to encode" in log  # the whole: every code from the shards
    assert len(rows["shard-0"]) == len(rows["shard-1"]) == len(metadata) // 2
    assert sorted(rows["shard-0"] + rows["shard-1"]) == sorted(rows["whole"])

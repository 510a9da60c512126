"""Scoring what a checkpoint speaks: rows read back, seeded batches, the evaluation pass, the scorer in training,
the best-checkpoint direction, `evaluate` and `check-transcripts` through the CLI.

The Whisper and WavLM stand-ins have random weights: their transcripts and embeddings are noise, so these tests
check what is computed and written, and the scores' values only where noise cannot move them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainerState, TrainingArguments

from axolotl_orpheus import layout
from axolotl_orpheus.args import OrpheusArgs
from axolotl_orpheus.audio import SAMPLE_RATE, load_clip
from axolotl_orpheus.cli.main import main as cli_main
from axolotl_orpheus.listen import speak
from axolotl_orpheus.listen.callbacks import SpeechScorer
from axolotl_orpheus.listen.evaluation import METRICS, Evaluation, prepared_rows, split_voice, text_rows
from axolotl_orpheus.plugin import OrpheusPlugin
from helpers import CLIPS_DIR, judge_options, usage_error, validated

SAMPLE_KEYS = {
    "wav",
    "voice",
    "text",
    "transcript",
    "language",
    "cer",
    "wer",
    "speaker_similarity",
    "stopped",
    "seconds",
    "reference_seconds",
    "duration_ratio",
    "loops",
    "dnsmos",  # None here, without a DNSMOS judge (conftest's scored_training has one)
}


@pytest.fixture(scope="module")
def tiny_model(standins):
    return AutoModelForCausalLM.from_pretrained(standins["model"])


@pytest.fixture(scope="module")
def judges(standins, snac_model):
    from axolotl_orpheus.listen.asr import ASR
    from axolotl_orpheus.listen.voiceprint import SpeakerEncoder

    return snac_model, ASR(str(standins["asr"]), "cpu"), SpeakerEncoder(str(standins["speaker"]), "cpu")


def row_of(tokenizer, text: str, voice: str | None, frames: np.ndarray) -> list[int]:
    (prompt_ids,) = layout.prompt_token_ids(tokenizer, [layout.prompt_text(text, voice)])
    return layout.frame_row(np.array(prompt_ids), frames).tolist()


def test_a_prepared_row_reads_back_as_its_text_voice_prompt_and_audio(tokenizer, snac_model):
    """The colon of "ada: Note: ..." separates a voice only when the data has that voice."""
    frames = layout.interleave(np.arange(3), np.arange(6), np.arange(12))
    rows = [row_of(tokenizer, "Note: this is it.", "ada", frames), row_of(tokenizer, "Note: no voice.", None, frames)]
    voiced, plain = prepared_rows(rows, tokenizer, snac_model, voices={"ada", "ben"})
    assert (voiced.voice, voiced.text) == ("ada", "Note: this is it.")
    assert (plain.voice, plain.text) == (None, "Note: no voice.")
    assert voiced.prompt_ids == speak.speech_prompt_ids(tokenizer, "Note: this is it.", "ada")
    assert len(voiced.reference) == 3 * layout.SAMPLES_PER_FRAME
    assert split_voice("ada: hi", set()) == (None, "ada: hi")


def test_a_row_samples_the_same_alone_or_in_a_batch(tiny_model, tokenizer):
    """Each row draws from its own seeded generator, so batching (and the caller's random state) changes nothing."""
    first, second = (speak.speech_prompt_ids(tokenizer, text, "ada") for text in ("Hello there.", "A longer text."))
    alone = speak.generate_frames(tiny_model, [second], [7], max_new_tokens=35)[0]
    torch.manual_seed(123)
    batched = speak.generate_frames(tiny_model, [first, second], [3, 7], max_new_tokens=35)
    np.testing.assert_array_equal(batched[1].frames, alone.frames)
    assert not np.array_equal(batched[0].frames, batched[1].frames)  # another seed, another sample
    assert not alone.stopped and alone.frames.shape == (5, 7)  # a random model never says end_of_speech


def test_the_evaluation_writes_each_sample_and_its_scores_and_repeats_with_its_seed(
    tmp_path, tiny_model, tokenizer, judges
):
    references = [load_clip(str(CLIPS_DIR / name)) for name in ("clip_01.wav", "clip_02.wav")]
    rows = text_rows(["Hello there.", "Good morning."], "ada", tokenizer, references)
    evaluation = Evaluation(*judges, max_new_tokens=35, seed=5)
    first = evaluation.run(tiny_model, rows, tmp_path / "first")
    again = evaluation.run(tiny_model, rows, tmp_path / "again")
    assert first["samples"] == again["samples"]
    np.testing.assert_equal(first["mean"], again["mean"])  # NaN (no DNSMOS judge here) equals NaN
    assert set(first["mean"]) == set(METRICS)
    assert json.loads((tmp_path / "first" / "metrics.json").read_text())["samples"] == first["samples"]
    for sample, reference in zip(first["samples"], references):
        assert set(sample) == SAMPLE_KEYS
        info = soundfile.info(str(tmp_path / "first" / sample["wav"]))
        assert info.samplerate == SAMPLE_RATE and info.frames == 5 * layout.SAMPLES_PER_FRAME
        assert sample["reference_seconds"] == round(len(reference) / SAMPLE_RATE, 3)
        assert sample["duration_ratio"] == pytest.approx(info.frames / len(reference))
        assert -1 <= sample["speaker_similarity"] <= 1 and 0 <= sample["cer"]
    assert [s["wav"] for s in first["samples"]] == ["row-00-ada.wav", "row-01-ada.wav"]
    assert first["mean"]["orpheus_stop_rate"] == 0.0  # 35 tokens and a random model: no sample ends itself
    # Another seed speaks other samples.
    other = Evaluation(*judges, max_new_tokens=35, seed=6).run(tiny_model, rows, tmp_path / "other")
    assert other["samples"][0]["speaker_similarity"] != first["samples"][0]["speaker_similarity"]


def test_texts_without_their_own_audio_are_compared_with_the_voice(tmp_path, tiny_model, tokenizer, judges):
    references = [load_clip(str(CLIPS_DIR / "clip_01.wav")), load_clip(str(CLIPS_DIR / "clip_03.wav"))]
    rows = text_rows(["One.", "Two.", "Three."], "ada", tokenizer, references)  # 2 clips for 3 texts: the voice's
    assert all(row.reference is None for row in rows)
    report = Evaluation(*judges, max_new_tokens=14, references=references).run(tiny_model, rows, tmp_path)
    assert all(s["speaker_similarity"] is not None and s["duration_ratio"] is None for s in report["samples"])
    assert math.isnan(report["mean"]["orpheus_duration_ratio"])


# The trainer the scorer sits in: the parts of transformers' Trainer it reads.
def trainer_for(tmp_path, tiny_model, tokenizer, eval_rows):
    from datasets import Dataset

    state = TrainerState(global_step=4)
    state.is_world_process_zero = True
    return SimpleNamespace(
        model=tiny_model,
        processing_class=tokenizer,
        eval_dataset=Dataset.from_dict({"input_ids": eval_rows}),
        state=state,
        args=SimpleNamespace(output_dir=str(tmp_path)),
        accelerator=SimpleNamespace(num_processes=1),
        compute_metrics=None,
        preprocess_logits_for_metrics=None,
    )


def test_the_scorer_is_the_trainers_compute_metrics_and_a_failure_gives_nan(
    tmp_path, tiny_model, tokenizer, standins, caplog
):
    frames = layout.interleave(np.arange(4), np.arange(8), np.arange(16))
    eval_rows = [row_of(tokenizer, text, "ada", frames) for text in ("Hi.", "Bye.", "Unused.")]
    trainer = trainer_for(tmp_path, tiny_model, tokenizer, eval_rows)
    settings = OrpheusArgs(
        orpheus_eval_samples=2,
        orpheus_snac_model=str(standins["snac"]),
        orpheus_asr_model=str(standins["asr"]),
        orpheus_speaker_model=str(standins["speaker"]),
        orpheus_sample_max_new_tokens=14,
    )
    scorer = SpeechScorer(trainer, settings, voices={"ada"})
    assert trainer.compute_metrics == scorer.compute_metrics
    assert trainer.preprocess_logits_for_metrics(torch.zeros(2, 5, 9), None).shape == (2, 1)
    scorer.on_train_begin(None, trainer.state, None, model=tiny_model)
    assert [row.text for row in scorer.rows] == ["Hi.", "Bye."]
    scores = trainer.compute_metrics(None)
    assert set(scores) == set(METRICS) and not any(math.isnan(scores[name]) for name in ("orpheus_cer",))
    written = json.loads((tmp_path / "orpheus_samples" / "step-4" / "metrics.json").read_text())
    assert written["mean"] == scores and [s["voice"] for s in written["samples"]] == ["ada", "ada"]

    scorer.evaluation.max_new_tokens = 3  # less than one frame: generation refuses, as any failure would
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.listen.callbacks"):
        failed = trainer.compute_metrics(None)
    assert set(failed) == set(METRICS) and all(math.isnan(value) for value in failed.values())
    assert "scoring at step 4 failed, scores are NaN; training goes on: ValueError: max_new_tokens" in caplog.text


def test_a_scoring_model_that_cannot_load_stops_training_before_its_first_step(
    tmp_path, tiny_model, tokenizer, standins
):
    trainer = trainer_for(tmp_path, tiny_model, tokenizer, [])
    settings = OrpheusArgs(
        orpheus_eval_samples=2, orpheus_snac_model=str(standins["snac"]), orpheus_asr_model=str(tmp_path / "no-whisper")
    )
    scorer = SpeechScorer(trainer, settings, voices=set())
    with pytest.raises(RuntimeError, match="orpheus_eval_samples: cannot load .*no-whisper.* orpheus_asr_model"):
        scorer.on_train_begin(None, trainer.state, None, model=tiny_model)


def test_no_scores_without_an_eval_split_or_under_sharded_weights(tmp_path, tiny_model, tokenizer, caplog):
    from axolotl.utils.dict import DictDefault

    trainer = trainer_for(tmp_path, tiny_model, tokenizer, [])
    plugin = OrpheusPlugin()
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.plugin"):
        sharded = DictDefault(orpheus_eval_samples=2, deepspeed="zero3.json")
        assert plugin.add_callbacks_post_trainer(sharded, trainer) == []
        trainer.eval_dataset = None
        assert plugin.add_callbacks_post_trainer(DictDefault(orpheus_eval_samples=2), trainer) == []
    assert "no samples or scores under FSDP or DeepSpeed" in caplog.text
    assert "orpheus_eval_samples: no eval split to score; set val_set_size or test_datasets" in caplog.text
    assert trainer.compute_metrics is None  # left as it was


@pytest.mark.parametrize(
    ("metric", "greater_is_better"),
    [
        ("eval_orpheus_cer", False),
        ("orpheus_wer", False),
        ("eval_orpheus_loop_rate", False),
        ("eval_orpheus_speaker_similarity", True),
        ("eval_orpheus_stop_rate", True),
    ],
)
def test_the_best_checkpoint_is_the_best_score_whatever_the_config_says(tmp_path, standins, metric, greater_is_better):
    """transformers would take every metric not ending in "loss" as better when greater; the plugin sets the
    direction, even over the config's own greater_is_better, and transformers' own choice then follows it."""
    cfg = validated(
        tmp_path,
        standins,
        val_set_size=0.3,
        orpheus_eval_samples=2,
        metric_for_best_model=metric,
        greater_is_better=not greater_is_better,
    )
    assert OrpheusPlugin().get_training_args(cfg) == {"greater_is_better": greater_is_better}
    args = TrainingArguments(
        output_dir=str(tmp_path), metric_for_best_model=metric, greater_is_better=greater_is_better
    )
    trainer = SimpleNamespace(args=args, state=TrainerState())
    name = metric if metric.startswith("eval_") else f"eval_{metric}"
    for value in (0.5, 0.2, 0.9):
        Trainer._determine_best_metric(trainer, {name: value}, None)
    assert trainer.state.best_metric == (0.9 if greater_is_better else 0.2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metric_for_best_model": "eval_orpheus_duration_ratio"}, "is best at 1, neither high nor low"),
        (
            {"metric_for_best_model": "eval_orpheus_cer", "orpheus_eval_samples": 0},
            "eval_orpheus_cer is scored only with orpheus_eval_samples",
        ),
    ],
)
def test_a_metric_that_cannot_choose_a_checkpoint_is_refused_when_the_config_loads(
    tmp_path, standins, changes, message
):
    with pytest.raises(ValueError, match=message):
        validated(tmp_path, standins, **{"orpheus_eval_samples": 2, **changes})


def test_evaluate_compares_checkpoints_on_texts_through_the_cli(tmp_path, standins, capsys):
    for name in ("run-a", "run-b"):
        shutil.copytree(standins["model"], tmp_path / name / "final")
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello there.\n\nGood morning.\n")
    out = tmp_path / "scores"
    arguments = [
        "evaluate",
        "--model",
        str(tmp_path / "run-a" / "final"),
        "--model",
        str(tmp_path / "run-b" / "final"),
        "--texts",
        str(texts),
        "--voice",
        "ada",
        "--reference",
        str(CLIPS_DIR / "clip_01.wav"),
        "--max-new-tokens",
        "21",
        "--out",
        str(out),
    ] + judge_options(standins)
    cli_main(arguments)
    table = capsys.readouterr().out
    assert "run-a-final" in table.splitlines()[0] and "run-b-final" in table.splitlines()[0]
    assert all(name.removeprefix("orpheus_") in table for name in METRICS)
    reports = json.loads((out / "metrics.json").read_text())
    assert list(reports) == ["run-a-final", "run-b-final"]
    # The same weights and seed: the same samples and scores, whichever folder they were read from.
    assert reports["run-a-final"]["samples"] == reports["run-b-final"]["samples"]
    assert sorted(p.name for p in (out / "run-a-final").iterdir()) == [
        "metrics.json",
        "row-00-ada.wav",
        "row-01-ada.wav",
    ]
    assert "either --prepared DIR or --texts FILE" in usage_error(
        capsys, ["evaluate", "--model", "m", "--out", str(out)]
    )
    refused = usage_error(capsys, ["evaluate", "--model", "m", "--prepared", str(tmp_path), "--out", str(out)])
    assert "is not a prepared dataset; give dataset_prepared_path/<hash>" in refused


def test_check_transcripts_lists_the_rows_over_the_threshold_worst_first(tmp_path, standins, capsys):
    folder = tmp_path / "voice"
    shutil.copytree(CLIPS_DIR, folder)
    (folder / "clip_04.wav").write_bytes(b"not a wav")
    out = tmp_path / "check" / "transcripts"
    cli_main(
        [
            "check-transcripts",
            str(folder),
            "--asr-model",
            str(standins["asr"]),
            "--device",
            "cpu",
            "--max-cer",
            "0.5",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    summary = report["summary"]
    assert (summary["rows"], summary["checked"], summary["unreadable"]) == (6, 5, 1)
    assert report["unreadable"][0]["row"] == 3 and "clip_04.wav" in report["unreadable"][0]["file"]
    cers = [row["cer"] for row in report["flagged"]]
    assert cers == sorted(cers, reverse=True) and all(cer > 0.5 for cer in cers)
    assert summary["flagged"] == len(cers) == sum(1 for line in out.with_suffix(".csv").read_text().splitlines()[1:])
    assert f"{summary['checked']} of 6 clips transcribed" in printed and "1 unreadable" in printed


# A user's mistakes in evaluate, speak, decode and check-transcripts: one line each, before any work.


def judged_by(standins) -> dict:
    return {
        "asr_model": str(standins["asr"]),
        "speaker_model": str(standins["speaker"]),
        "snac_model": str(standins["snac"]),
        "device": "cpu",
    }


def test_every_model_and_reference_is_checked_before_any_work(tmp_path, standins, monkeypatch, capsys):
    """`evaluate --model good --model typo` used to score the first model, then die in a traceback without a table:
    each model (a folder with config.json, an adapter whose base is one, or a hub id the hub serves) and each
    reference clip is checked before SNAC or any model loads. `speak` says the same of a wrong --model."""
    from axolotl_orpheus.errors import UserError
    from axolotl_orpheus.listen import evaluation

    monkeypatch.setattr(evaluation.codec, "load_snac", lambda *args, **kwargs: pytest.fail("the work began"))
    model, out = str(standins["model"]), tmp_path / "out"
    texts = {"texts": ["Hello there."], **judged_by(standins)}
    typo = tmp_path / "typo"
    with pytest.raises(UserError, match=rf"^no model '{typo}': no such folder, nor a model the hub serves \(.+\)\. To"):
        evaluation.evaluate_checkpoints([model, str(typo)], out, **texts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"^{tmp_path / 'empty'} is a folder with no config.json or adapter_config"):
        evaluation.evaluate_checkpoints([str(tmp_path / "empty")], out, **texts)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match=f"^the LoRA adapter {adapter} is for the base model '{tmp_path / 'gone'}', wh"):
        evaluation.evaluate_checkpoints([model, str(adapter)], out, **texts)
    missing = tmp_path / "missing.wav"
    with pytest.raises(UserError, match=f"^--reference {missing}: audio file not found: {missing}. To fix"):
        evaluation.evaluate_checkpoints([model], out, references=[missing], **texts)
    assert not out.exists()

    refused = usage_error(capsys, ["speak", "--model", str(typo), "--text", "Hi.", "--out", str(tmp_path / "a.wav")])
    assert f"no model '{typo}': no such folder" in refused


def test_rows_beyond_the_data_are_said_and_no_rows_are_refused(tmp_path, standins, tokenizer, caplog, monkeypatch):
    """--rows above the prepared rows speaks those there are and says so, before the work; --rows 0 or less is
    refused in one line (it used to reach the speaker model with no clips)."""
    from datasets import Dataset

    from axolotl_orpheus.errors import UserError
    from axolotl_orpheus.listen import evaluation
    from axolotl_orpheus.listen.evaluation import evaluate_checkpoints, read_texts

    frames = layout.interleave(np.arange(4), np.arange(8), np.arange(16))
    prepared = tmp_path / "prepared"
    Dataset.from_dict({"input_ids": [row_of(tokenizer, text, None, frames) for text in ("Hi.", "Bye.")]}).save_to_disk(
        str(prepared)
    )
    model, out = str(standins["model"]), tmp_path / "out"
    for rows in (0, -3):
        with pytest.raises(UserError, match=rf"^--rows {rows}: give how many of the prepared rows to speak, 1 or more"):
            evaluate_checkpoints([model], out, prepared=prepared, rows=rows, **judged_by(standins))
    spoken = []
    monkeypatch.setattr(evaluation, "prepared_rows", lambda input_ids, *args: spoken.append(input_ids) or [])
    monkeypatch.setattr(
        evaluation.Evaluation, "run", lambda self, model, rows, folder: folder.mkdir(parents=True) or {}
    )
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.listen.evaluation"):
        evaluate_checkpoints([model], out, prepared=prepared, rows=5, **judged_by(standins))
    assert f"--rows 5: {prepared} holds 2 rows; speaking those 2" in caplog.text
    assert [len(ids) for ids in spoken] == [2]

    with pytest.raises(UserError, match=f"^--texts {tmp_path / 'texts.txt'}: no such file. To fix"):
        read_texts(tmp_path / "texts.txt")
    (tmp_path / "texts.txt").write_text("One.\n\n Two. \n")
    assert read_texts(tmp_path / "texts.txt") == ["One.", "Two."]


def test_eval_samples_beyond_the_eval_split_are_said(tmp_path, tiny_model, tokenizer, standins, caplog):
    frames = layout.interleave(np.arange(4), np.arange(8), np.arange(16))
    trainer = trainer_for(tmp_path, tiny_model, tokenizer, [row_of(tokenizer, "Hi.", "ada", frames)])
    settings = OrpheusArgs(
        orpheus_eval_samples=8,
        orpheus_snac_model=str(standins["snac"]),
        orpheus_asr_model=str(standins["asr"]),
        orpheus_speaker_model=str(standins["speaker"]),
    )
    scorer = SpeechScorer(trainer, settings, voices={"ada"})
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.listen.callbacks"):
        scorer.on_train_begin(None, trainer.state, None, model=tiny_model)
    assert "orpheus_eval_samples: 8, but the eval split holds 1 rows: scoring those 1" in caplog.text
    assert len(scorer.rows) == 1


def test_decode_and_check_transcripts_refuse_a_wrong_path_at_once(tmp_path, capsys):
    from axolotl_orpheus.errors import UserError
    from axolotl_orpheus.recordings.transcripts import check_transcripts

    refused = usage_error(capsys, ["decode", "--prepared", str(tmp_path), "--out", str(tmp_path / "row.wav")])
    assert f"{tmp_path} is not a prepared dataset; give dataset_prepared_path/<hash>" in refused
    with pytest.raises(UserError, match=f"^cannot load the dataset {tmp_path / 'nowhere'}: "):
        check_transcripts(str(tmp_path / "nowhere"), lambda: pytest.fail("the ASR loaded before the dataset opened"))

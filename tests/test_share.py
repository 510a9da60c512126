"""Sharing a voice: what training stamps into every checkpoint, `axolotl-orpheus share` on a full model and on a LoRA
adapter (as is and merged), the card, the published config, and `init --from` a shared voice.

The full fine-tune is conftest's scored_training (the tiny stand-in Llama, scored by the stand-in Whisper and speaker
model at each evaluation); a LoRA run on the same prepared rows is trained once for the module, through axolotl's own
command line in this process (helpers.run_axolotl).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import soundfile
import torch
import yaml

from axolotl_orpheus import layout
from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, newest_prepared_dataset
from axolotl_orpheus.cli.main import main as cli_main
from axolotl_orpheus.listen.speak import speech_prompt_ids
from axolotl_orpheus.share.config import LOCAL_NOTE, continue_from, without_secrets
from helpers import SECRETS, judge_options, run_axolotl, usage_error

# The shared folders' samples: one each, two frames, to keep the module quick.
TINY_SAMPLES = ["--samples", "1", "--max-new-tokens", "14", "--device", "cpu"]


@dataclass
class Runs:
    config: Path  # the full fine-tune's, holding SECRETS
    full: Path  # its output_dir
    lora_config: Path
    lora: Path
    prepared: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scored_training) -> Runs:
    config = yaml.safe_load(scored_training.config.read_text())
    root = tmp_path_factory.mktemp("runs")
    dropped = {"metric_for_best_model", "greater_is_better", "load_best_model_at_end", *SECRETS}
    lora = {key: value for key, value in config.items() if key not in dropped}
    lora.update(
        adapter="lora",
        lora_r=2,
        lora_alpha=4,
        lora_target_modules=["q_proj", "v_proj"],
        max_steps=2,
        orpheus_eval_samples=0,
        output_dir=str(root / "lora"),
        # axolotl's fused LoRA kernels patch LlamaAttention for the whole process: later models here would break.
        lora_qkv_kernel=False,
        lora_o_kernel=False,
        lora_mlp_kernel=False,
    )
    lora_path = root / "lora.yml"
    lora_path.write_text(yaml.safe_dump(lora))
    with pytest.MonkeyPatch.context() as monkeypatch:  # the `axolotl` fixture's run, for the module
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(scored_training.datasets_cache))
        run_axolotl(monkeypatch, "train", lora_path, root)
    full = scored_training
    return Runs(full.config, full.output_dir, lora_path, root / "lora", full.prepared)


def share(argv: list[str]) -> str:
    """`axolotl-orpheus share ARGV`'s printed lines."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli_main(["share", *argv])
    return printed.getvalue()


@pytest.fixture(scope="module")
def full_voice(runs, tmp_path_factory) -> tuple[Path, str]:
    """The full fine-tune shared with its config (secrets and all), no consent, no licence: (folder, printed)."""
    out = tmp_path_factory.mktemp("shared") / "my-voice"
    return out, share([str(runs.full), "--out", str(out), "--config", str(runs.config), *TINY_SAMPLES])


def test_training_stamps_output_dir_and_every_checkpoint(runs):
    """The plugin writes the stop token and sampling, the voices and the data's report into each save, unshared."""
    for folder in (runs.full, runs.full / "checkpoint-2", runs.lora, runs.lora / "checkpoint-2"):
        generation = json.loads((folder / "generation_config.json").read_text())
        assert generation["eos_token_id"] == layout.END_OF_SPEECH == 128258, folder
        assert (generation["pad_token_id"], generation["do_sample"]) == (layout.PAD, True)
        assert (generation["temperature"], generation["top_p"], generation["repetition_penalty"]) == (0.6, 0.95, 1.1)
        assert generation["max_new_tokens"] == 1200
        voice = json.loads((folder / "orpheus_voice.json").read_text())
        assert voice["prompt"] == "{voice}: {text}" and voice["sample_rate"] == 24000
        assert {name: entry["clips"] for name, entry in voice["voices"].items()} == {"ada": 3, "ben": 3}
        assert all(entry["hours"] > 0 for entry in voice["voices"].values())
        report = json.loads((folder / "orpheus_report.json").read_text())
        assert report == json.loads((runs.prepared / "orpheus_report.json").read_text())


def test_a_shared_full_model_holds_what_a_loader_a_reader_and_a_trainer_need(full_voice, runs):
    out, printed = full_voice
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "config.json",
        "finetune.yml",
        "generation_config.json",
        "model.safetensors",
        "orpheus_report.json",
        "orpheus_voice.json",
        "samples/00-ada.wav",
        "samples/samples.json",
        "scores.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert "warning: no --consent: the card says the speakers' consent was not stated" in printed
    assert "warning: finetune.yml names paths on this machine, marked in it for others to replace: " in printed
    assert f"wrote {out} (full model from {runs.full})" in printed

    info = soundfile.info(out / "samples" / "00-ada.wav")
    assert info.samplerate == 24000 and info.frames == 2 * layout.SAMPLES_PER_FRAME  # 14 tokens: two frames
    samples = json.loads((out / "samples" / "samples.json").read_text())
    from axolotl_orpheus.share.folder import SAMPLE_TEXTS

    assert samples["samples"] == [{"file": "samples/00-ada.wav", "voice": "ada", "text": SAMPLE_TEXTS[0], "seed": 0}]
    assert samples["settings"] == {"temperature": 0.6, "top_p": 0.95, "repetition_penalty": 1.1, "max_new_tokens": 14}

    # The best evaluation of the training (of steps 2 and 4: axolotl also scores the untrained model at step 0),
    # with the models that heard it.
    scores = json.loads((out / "scores.json").read_text())
    state = json.loads((runs.full / "checkpoint-4" / "trainer_state.json").read_text())
    best = state["best_global_step"]
    (evaluation,) = [entry for entry in state["log_history"] if "eval_orpheus_cer" in entry and entry["step"] == best]
    logged = {key.removeprefix("eval_"): value for key, value in evaluation.items() if key.startswith("eval_orpheus_")}
    assert scores["means"] == logged and {"orpheus_cer", "orpheus_speaker_similarity"} <= set(logged)
    assert best in (2, 4) and f"step {best}, the best by metric_for_best_model" in scores["source"]
    assert (scores["asr_model"], scores["speaker_model"]) == (str(runs_models(runs)[0]), str(runs_models(runs)[1]))

    # Every orpheus_* key, the trainer's paths marked, and the same settings as trained.
    published = yaml.safe_load((out / "finetune.yml").read_text())
    trained = yaml.safe_load(runs.config.read_text())
    from axolotl_orpheus.args import OrpheusArgs

    assert set(OrpheusArgs.model_fields) <= set(published)
    assert OrpheusArgs.from_cfg(published) == OrpheusArgs.from_cfg(trained)
    marked = [line for line in (out / "finetune.yml").read_text().splitlines() if line.endswith(LOCAL_NOTE)]
    assert any(line.startswith("output_dir: ") for line in marked) and any("path: " in line for line in marked)


def runs_models(runs) -> tuple[str, str]:
    trained = yaml.safe_load(runs.config.read_text())
    return trained["orpheus_asr_model"], trained["orpheus_speaker_model"]


def test_no_secret_reaches_the_shared_folder(full_voice, runs):
    out, printed = full_voice
    trained = runs.config.read_text()
    assert all(secret in trained for secret in SECRETS.values())  # the config it shared held them
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(secret.encode() in content for secret in SECRETS.values()), path
    (line,) = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("Left out as secrets")]
    assert all(f"`{key}`" in line for key in SECRETS)


def test_the_card_parses_with_the_hubs_metadata(full_voice):
    from huggingface_hub import ModelCard

    out, _ = full_voice
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-to-speech" and data["library_name"] == "transformers"
    assert {"orpheus", "axolotl"} <= set(data["tags"])
    assert data["language"] == ["en"]  # orpheus_eval_language
    assert "base_model" not in data  # a path on the trainer's machine is no hub id
    assert "license" not in data
    text = card.text
    for part in (
        "## Data",
        "## Scores",
        "## Samples",
        "## Use",
        "## Reproduce, or build on it",
        "## Consent and licence",
    ):
        assert part in text, part
    assert "| ada | 3 |" in text and "| ben | 3 |" in text
    assert "No consent statement was given" in text and "not stated by the publisher" in text
    assert f"axolotl-orpheus init ./my-data --from {out}" in text
    assert "axolotl preprocess finetune.yml && axolotl train finetune.yml" in text


def test_generate_on_the_folder_stops_at_end_of_speech_through_generation_config_alone(full_voice, tokenizer):
    """A plain `generate` with no stop token given: the folder's generation_config.json ends it at end_of_speech,
    where the model's own config would run on to the budget."""
    from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessor

    class SaysEndOfSpeechAtStep3(LogitsProcessor):
        def __init__(self, prompt_length):
            self.prompt_length = prompt_length

        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, -float("inf"))
            token = layout.END_OF_SPEECH if input_ids.shape[1] - self.prompt_length == 3 else layout.AUDIO_TOKENS_START
            forced[:, token] = 0.0
            return forced

    out, _ = full_voice
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.generation_config.eos_token_id == layout.END_OF_SPEECH
    prompt = torch.tensor([speech_prompt_ids(tokenizer, "Hi.", "ada")])
    said = model.generate(prompt, logits_processor=[SaysEndOfSpeechAtStep3(prompt.shape[1])], max_new_tokens=20)
    assert said[0, prompt.shape[1] :].tolist() == [layout.AUDIO_TOKENS_START] * 3 + [layout.END_OF_SPEECH]

    model.generation_config = GenerationConfig.from_model_config(model.config)  # without the folder's file
    said = model.generate(
        prompt, logits_processor=[SaysEndOfSpeechAtStep3(prompt.shape[1])], max_new_tokens=20, do_sample=False
    )
    assert said.shape[1] - prompt.shape[1] == 20


def test_speak_and_the_voice_loader_read_the_folder(full_voice, tmp_path, standins, capsys):
    from axolotl_orpheus.listen.voice import load_voice

    out, _ = full_voice
    voice = load_voice(str(out), "cpu")
    assert set(voice.info.voices) == {"ada", "ben"} and voice.info.snac_model == str(standins["snac"])
    wav = tmp_path / "hello.wav"
    cli_main(
        ["speak", "--model", str(out), "--voice", "ben", "--text", "Hi.", "--out", str(wav)]
        + ["--snac-model", voice.info.snac_model, *TINY_SAMPLES[2:]]
    )
    assert soundfile.info(wav).samplerate == 24000


def test_a_lora_adapter_shared_as_is_and_merged(runs, tmp_path, standins):
    """As is: the adapter and its tokenizer. Merged: a model in the base's dtype whose logits are base + adapter's
    (within 1e-5, float32 sums in another order)."""
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    printed = share([str(runs.lora), "--out", str(adapter), "--samples", "0", "--license", "apache-2.0"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "config.json").exists()  # it would make loaders take the folder for a full model
    assert "others cannot apply it. To fix: --merge" in printed
    data = ModelCard.load(adapter / "README.md").data.to_dict()
    assert (data["library_name"], data["base_model_relation"], data["license"]) == ("peft", "adapter", "apache-2.0")

    merged = tmp_path / "merged"
    share([str(runs.lora), "--out", str(merged), "--merge", "--samples", "0"])
    assert not (merged / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(standins["model"], dtype="auto").eval()
    alone = AutoModelForCausalLM.from_pretrained(merged, dtype="auto").eval()
    assert alone.dtype == base.dtype
    assert alone.generation_config.eos_token_id == layout.END_OF_SPEECH
    prompt = torch.tensor([[layout.START_OF_HUMAN, layout.START_OF_TEXT, 83, 5169, 25, 22691, *layout.PROMPT_SUFFIX]])
    with torch.no_grad():
        before = base(prompt).logits
        applied = PeftModel.from_pretrained(base, runs.lora).eval()(prompt).logits
        torch.testing.assert_close(alone(prompt).logits, applied, rtol=1e-5, atol=1e-5)
        assert (applied - before).abs().max() > 1e-3  # the adapter changed the model


def test_scores_from_evaluate_and_refusals(runs, full_voice, tmp_path, standins, capsys):
    evaluated = tmp_path / "evaluated"
    cli_main(
        ["evaluate", "--model", str(runs.full), "--texts", str(write_texts(tmp_path)), "--voice", "ada"]
        + ["--reference", str(BUNDLED_CLIPS / "clip_01.wav")]
        + ["--out", str(evaluated), "--max-new-tokens", "14"]
        + judge_options(standins)
    )
    out = tmp_path / "voice"
    share([str(runs.full), "--out", str(out), "--scores", str(evaluated), "--samples", "0"])
    scores = json.loads((out / "scores.json").read_text())
    metrics = json.loads((evaluated / "metrics.json").read_text())
    (report,) = metrics.values()
    assert scores["means"] == report["mean"] and scores["samples"] == 1
    assert (scores["asr_model"], scores["speaker_model"]) == (str(standins["asr"]), str(standins["speaker"]))
    card = (out / "README.md").read_text()
    assert f"`axolotl-orpheus evaluate` of {runs.full}" in card and str(standins["speaker"]) in card

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is not `evaluate` output" in usage_error(
        capsys, ["share", str(runs.full), "--out", str(tmp_path / "x"), "--scores", str(empty)]
    )
    assert "is no checkpoint" in usage_error(capsys, ["share", str(empty), "--out", str(tmp_path / "x")])
    full_out, _ = full_voice
    refused = usage_error(capsys, ["share", str(runs.full), "--out", str(full_out)])
    assert "exists and is not empty. To fix: give another --out, or --overwrite" in refused
    assert "nothing to merge" in usage_error(capsys, ["share", str(runs.full), "--out", str(tmp_path / "x"), "--merge"])

    orphan = tmp_path / "orphan"
    orphan.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (orphan / name).write_bytes((runs.lora / name).read_bytes())
    adapter_config = json.loads((orphan / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(tmp_path / "gone")
    (orphan / "adapter_config.json").write_text(json.dumps(adapter_config))
    refused = usage_error(capsys, ["share", str(orphan), "--out", str(tmp_path / "x")])
    assert f"the adapter's base model {str(tmp_path / 'gone')!r} cannot be found" in refused
    assert not (tmp_path / "x").exists()  # refused before anything was written


def write_texts(folder: Path) -> Path:
    path = folder / "texts.txt"
    path.write_text("Hello there.\n")
    return path


def test_push_to_the_hub_offline_fails_with_the_fix_and_keeps_the_folder(runs, tmp_path, capsys):
    out = tmp_path / "voice"
    refused = usage_error(
        capsys, ["share", str(runs.full), "--out", str(out), "--samples", "0", "--push-to-hub", "me/my-voice"]
    )
    assert "cannot push to the hub: HF_HUB_OFFLINE is set" in refused
    assert f"the voice folder {out} is kept: upload it later with `hf upload me/my-voice {out}" in refused
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
    assert "is not a hub id" in usage_error(
        capsys, ["share", str(runs.full), "--out", str(tmp_path / "y"), "--push-to-hub", "no-owner"]
    )


def test_init_from_a_shared_voice_writes_a_config_axolotl_preprocesses(
    full_voice, tmp_path, monkeypatch, standins, axolotl
):
    """A second voice built on the first: base_model is the shared folder, its orpheus_* settings come along, and
    axolotl's own preprocess (in this process) accepts the config as init wrote it."""
    out, _ = full_voice
    monkeypatch.chdir(tmp_path)  # init's config names ./prepared and ./outputs, as axolotl runs from here
    config_path = tmp_path / "second.yml"
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["init", str(BUNDLED_CLIPS), "--from", str(out), "--out", str(config_path)])
    config = yaml.safe_load(config_path.read_text())
    assert config["base_model"] == str(out.resolve())
    assert config["orpheus_snac_model"] == str(standins["snac"])
    assert (config["orpheus_eval_samples"], config["orpheus_eval_language"]) == (2, "en")  # carried over
    assert "orpheus_sample_prompts" not in config and "adapter" not in config
    assert "# Continues from the shared voice" in config_path.read_text()

    config["dataset_num_proc"] = 1  # spawning workers costs more than these six clips
    config_path.write_text(yaml.safe_dump(config))
    axolotl("preprocess", config_path, tmp_path)
    report = json.loads((newest_prepared_dataset(tmp_path / "prepared") / "orpheus_report.json").read_text())
    assert report["total"]["rows_out"] == 6


def test_init_from_a_shared_adapter_trains_the_adapter_on_its_base(runs, tmp_path):
    from axolotl.cli.config import load_cfg

    adapter = tmp_path / "adapter"
    share([str(runs.lora), "--out", str(adapter), "--config", str(runs.lora_config), "--samples", "0"])
    start = continue_from(str(adapter))
    settings = yaml.safe_load(start.settings)
    assert start.base_model == yaml.safe_load(runs.lora_config.read_text())["base_model"]
    assert (settings["adapter"], settings["lora_model_dir"], settings["lora_r"]) == ("lora", str(adapter.resolve()), 2)
    config_path = tmp_path / "second.yml"
    config = {**yaml.safe_load(runs.lora_config.read_text()), **settings, "output_dir": str(tmp_path / "out")}
    config_path.write_text(yaml.safe_dump(config))
    assert load_cfg(str(config_path)).lora_model_dir == str(adapter.resolve())  # axolotl's validation accepts it


def test_secrets_are_left_out_by_name_and_by_value():
    config = {
        "wandb_api_key": "x",
        "hub_token": "y",
        "HF_TOKEN": "z",
        "comet_api_key": "k",
        "db_password": "p",
        "hf_use_auth_token": True,  # a switch, not a secret
        "special_tokens": {"pad_token": "<custom_token_7>", "eos_token": "<|eot_id|>"},
        "datasets": [{"path": "me/data", "token": "t"}, {"path": "hf_AbCdEfGhIjKlMnOpQrStUvWx"}],
        "mlflow_experiment_name": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz",
        "sequence_len": 1024,
    }
    kept, removed = without_secrets(config)
    assert kept == {
        "hf_use_auth_token": True,
        "special_tokens": {"pad_token": "<custom_token_7>", "eos_token": "<|eot_id|>"},
        "datasets": [{"path": "me/data"}, {}],
        "sequence_len": 1024,
    }
    assert removed == [
        "wandb_api_key",
        "hub_token",
        "HF_TOKEN",
        "comet_api_key",
        "db_password",
        "datasets[0].token",
        "datasets[1].path",
        "mlflow_experiment_name",
    ]


def test_the_shared_voice_example_is_what_share_writes():
    from axolotl_orpheus.listen.voice import VoiceInfo
    from axolotl_orpheus.share.config import published_config
    from axolotl_orpheus.share.stamp import generation_config

    example = Path(__file__).parents[1] / "examples" / "shared-voice"
    written = generation_config().to_diff_dict()
    written.pop("transformers_version", None)
    assert json.loads((example / "generation_config.json").read_text()) == written
    assert VoiceInfo.read(example).check_voice("myvoice") == "myvoice"
    published = published_config(example.parent / "lora.yml").text
    assert (example / "finetune.yml").read_text() == published, "write it again: examples/shared-voice/README.md"

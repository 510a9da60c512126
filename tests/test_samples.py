"""Speech samples during training: the callback on its own, with the tiny model and tensorboard."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import soundfile
from transformers import AutoModelForCausalLM, TrainerState
from transformers.integrations import TensorBoardCallback

from axolotl_orpheus.args import SamplePrompt
from axolotl_orpheus.samples import SpeechSamplesCallback


@pytest.fixture(scope="module")
def tiny_model(standins):
    return AutoModelForCausalLM.from_pretrained(standins["model"])


def make_callback(tokenizer, standins, callbacks=()):
    prompts = [SamplePrompt(text="Hello there.", voice="ada"), SamplePrompt(text="Plain text.")]
    return SpeechSamplesCallback(prompts, tokenizer, str(standins["snac"]), 70, list(callbacks))


def state_at(step: int, main: bool = True) -> TrainerState:
    state = TrainerState(global_step=step)
    state.is_world_process_zero = main
    return state


def test_each_evaluation_writes_its_samples_once(tmp_path, tokenizer, standins, tiny_model):
    callback = make_callback(tokenizer, standins)
    args = SimpleNamespace(output_dir=str(tmp_path), report_to=[])
    tiny_model.train()
    callback.on_evaluate(args, state_at(5), None, model=tiny_model)
    callback.on_train_end(args, state_at(5), None, model=tiny_model)  # same step: not spoken again
    callback.on_evaluate(args, state_at(10), None, model=tiny_model)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav"))
    assert written == [
        "orpheus_samples/step-10/00-ada.wav", "orpheus_samples/step-10/01-text.wav",
        "orpheus_samples/step-5/00-ada.wav", "orpheus_samples/step-5/01-text.wav",
    ]
    assert soundfile.info(str(tmp_path / written[0])).samplerate == 24000
    assert tiny_model.training  # back in training mode after speaking


def test_other_processes_speak_nothing(tmp_path, tokenizer, standins, tiny_model):
    make_callback(tokenizer, standins).on_evaluate(
        SimpleNamespace(output_dir=str(tmp_path), report_to=[]), state_at(5, main=False), None, model=tiny_model
    )
    assert not any(tmp_path.iterdir())


def test_samples_reach_tensorboard(tmp_path, tokenizer, standins, tiny_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from torch.utils.tensorboard import SummaryWriter

    board = TensorBoardCallback(SummaryWriter(log_dir=str(tmp_path / "tb")))
    args = SimpleNamespace(output_dir=str(tmp_path / "out"), report_to=["tensorboard"])
    make_callback(tokenizer, standins, [board]).on_train_end(args, state_at(3), None, model=tiny_model)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"audio": 0})
    events.Reload()
    assert sorted(events.Tags()["audio"]) == ["orpheus_samples/00-ada", "orpheus_samples/01-text"]
    assert events.Audio("orpheus_samples/00-ada")[0].sample_rate == 24000


def test_samples_reach_wandb(tmp_path, tokenizer, standins, tiny_model, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="orpheus-test")
    try:
        args = SimpleNamespace(output_dir=str(tmp_path / "out"), report_to=["wandb"])
        make_callback(tokenizer, standins).on_train_end(args, state_at(3), None, model=tiny_model)
        media = sorted(p.name for p in (tmp_path / "wandb").rglob("*.wav"))
    finally:
        run.finish()
    assert len(media) == 2 and all(name.startswith(("00-ada", "01-text")) for name in media)

"""Speech samples during training: the callback on its own, with the tiny model and tensorboard."""

from __future__ import annotations

import logging
import weakref
from types import SimpleNamespace

import pytest
import soundfile
import torch
from transformers import AutoModelForCausalLM, TrainerState
from transformers.integrations import TensorBoardCallback

from axolotl_orpheus.args import SamplePrompt
from axolotl_orpheus.listen import speak
from axolotl_orpheus.listen.callbacks import SpeechSamplesCallback
from helpers import validated


@pytest.fixture(scope="module")
def tiny_model(standins):
    return AutoModelForCausalLM.from_pretrained(standins["model"])


def make_callback(tokenizer, standins, callbacks=(), snac_model=None):
    prompts = [SamplePrompt(text="Hello there.", voice="ada"), SamplePrompt(text="Plain text.")]
    return SpeechSamplesCallback(prompts, tokenizer, snac_model or str(standins["snac"]), 70, list(callbacks))


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
        "orpheus_samples/step-10/00-ada.wav",
        "orpheus_samples/step-10/01-text.wav",
        "orpheus_samples/step-5/00-ada.wav",
        "orpheus_samples/step-5/01-text.wav",
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


@pytest.mark.parametrize(
    "prompt, message",
    [
        ({"text": "  "}, "a prompt's text is empty; give it a sentence"),
        ({"text": "Hi.", "voice": ""}, "a prompt's voice is empty; give the speaker name"),
    ],
)
def test_an_empty_sample_prompt_is_refused_when_the_config_loads(tmp_path, standins, prompt, message):
    with pytest.raises(ValueError, match=message):
        validated(tmp_path, standins, orpheus_sample_prompts=[prompt])


def test_the_snac_decoder_loads_when_training_begins(tokenizer, standins, tiny_model):
    callback = make_callback(tokenizer, standins)
    callback.on_train_begin(None, state_at(0, main=False), None, model=tiny_model)
    assert callback.snac is None  # only the main process speaks
    callback.on_train_begin(None, state_at(0), None, model=tiny_model)
    assert next(callback.snac.parameters()).device == next(tiny_model.parameters()).device


def test_the_samples_decoder_follows_orpheus_cpu_kernels(tmp_path, tokenizer, standins, tiny_model, caplog):
    """From the config through the plugin's hook: with orpheus_cpu_kernels: false the decoder runs torch's kernels."""
    from axolotl_orpheus.plugin import OrpheusPlugin

    cfg = validated(tmp_path, standins, orpheus_sample_prompts=[{"text": "Hi."}], orpheus_cpu_kernels=False)
    trainer = SimpleNamespace(processing_class=tokenizer, callback_handler=SimpleNamespace(callbacks=[]))
    (callback,) = OrpheusPlugin().add_callbacks_post_trainer(cfg, trainer)
    with caplog.at_level("INFO", logger="axolotl_orpheus.codec"):
        callback.on_train_begin(None, state_at(0), None, model=tiny_model)
    assert "on cpu: torch's kernels (orpheus_cpu_kernels: false)" in caplog.text


def test_a_snac_that_cannot_load_stops_training_before_its_first_step(tmp_path, tokenizer, standins, tiny_model):
    callback = make_callback(tokenizer, standins, snac_model=str(tmp_path / "missing-snac"))
    with pytest.raises(RuntimeError, match="cannot load the SNAC model .*missing-snac.* Set orpheus_snac_model to"):
        callback.on_train_begin(None, state_at(0), None, model=tiny_model)


def test_a_failing_sample_is_logged_and_training_goes_on(
    tmp_path, tokenizer, standins, tiny_model, monkeypatch, caplog
):
    """Out of memory on one sample: the others are still spoken, and the failed one's memory is handed back."""
    real_speak = speak.speak
    generation = []  # a weak reference to what the failed generation held when it ran out of memory

    def speak_or_run_out_of_memory(model, tokenizer, snac, text, voice=None, **settings):
        if text == "Hello there.":
            held = torch.zeros(8)
            generation.append(weakref.ref(held))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_speak(model, tokenizer, snac, text, voice, **settings)

    still_held = []  # at each torch.cuda.empty_cache(): was the failed generation's memory still held?
    monkeypatch.setattr(speak, "speak", speak_or_run_out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: still_held.append(generation[0]() is not None))
    callback = make_callback(tokenizer, standins)
    args = SimpleNamespace(output_dir=str(tmp_path), report_to=[])
    tiny_model.train()
    callback.on_train_begin(args, state_at(0), None, model=tiny_model)
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.listen.callbacks"):
        callback.on_evaluate(args, state_at(5), None, model=tiny_model)
    assert [p.name for p in (tmp_path / "orpheus_samples" / "step-5").iterdir()] == ["01-text.wav"]
    assert "sample 00-ada ('Hello there.') failed at step 5" in caplog.text
    assert "OutOfMemoryError: CUDA out of memory" in caplog.text
    assert still_held == [False]  # emptied once, after the failed generation's tensors were freed
    assert tiny_model.training

"""Speech samples during training: hear the fine-tune at each evaluation and at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from axolotl.utils.logging import get_logger
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from axolotl_orpheus import codec, speak
from axolotl_orpheus.args import SamplePrompt
from axolotl_orpheus.audio import SAMPLE_RATE, write_wav

LOG = get_logger(__name__)
SAMPLES_FOLDER = "orpheus_samples"


def sample_name(index: int, prompt: SamplePrompt) -> str:
    return f"{index:02d}-{prompt.voice or 'text'}"


class SpeechSamplesCallback(TrainerCallback):
    """Speaks `orpheus_sample_prompts` with the model being trained, on the main process only.

    Writes output_dir/orpheus_samples/step-N/NN-voice.wav and logs them as audio to wandb and tensorboard
    when those are on. The SNAC decoder is loaded on first use, on the model's device.
    """

    def __init__(self, prompts: list[SamplePrompt], tokenizer, snac_model: str, max_new_tokens: int, callbacks):
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.snac_model = snac_model
        self.max_new_tokens = max_new_tokens
        self.callbacks = callbacks  # the trainer's, to find tensorboard's writer
        self.snac = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.speak_samples(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.speak_samples(args, state, model)

    def speak_samples(self, args, state, model) -> None:
        folder = Path(args.output_dir) / SAMPLES_FOLDER / f"step-{state.global_step}"
        # An evaluation at the last step and the end of training share a step: speak once.
        if not state.is_world_process_zero or model is None or folder.is_dir():
            return
        device = next(model.parameters()).device
        if self.snac is None:
            self.snac = codec.load_snac(self.snac_model, device)
        LOG.info(f"Orpheus: speaking {len(self.prompts)} samples into {folder}")
        folder.mkdir(parents=True)
        clips = {}
        for index, prompt in enumerate(self.prompts):
            name = sample_name(index, prompt)
            clips[name] = speak.speak(
                model, self.tokenizer, self.snac, prompt.text, prompt.voice, seed=index,
                max_new_tokens=self.max_new_tokens,
            )
            write_wav(folder / f"{name}.wav", clips[name])
        self.log_audio(args, state.global_step, clips)

    def log_audio(self, args, step: int, clips: dict[str, np.ndarray]) -> None:
        if "wandb" in args.report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({f"{SAMPLES_FOLDER}/{name}": wandb.Audio(clip, sample_rate=SAMPLE_RATE) for name, clip in clips.items()})
        for callback in self.callbacks:
            writer = getattr(callback, "tb_writer", None) if isinstance(callback, TensorBoardCallback) else None
            if writer is not None:
                for name, clip in clips.items():
                    writer.add_audio(f"{SAMPLES_FOLDER}/{name}", clip[None], step, sample_rate=SAMPLE_RATE)
                writer.flush()

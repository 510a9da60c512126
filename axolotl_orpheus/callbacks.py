"""Speech samples during training: hear the fine-tune at each evaluation and at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
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
    when those are on. The SNAC decoder is loaded when training begins, so a broken one stops training before
    its first step; after that a sample that fails is logged and skipped, and training goes on.
    """

    def __init__(
        self, prompts: list[SamplePrompt], tokenizer, snac_model: str, max_new_tokens: int, callbacks,
        cpu_kernels: bool = True,
    ):
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.snac_model = snac_model
        self.max_new_tokens = max_new_tokens
        self.callbacks = callbacks  # the trainer's, to find tensorboard's writer
        self.cpu_kernels = cpu_kernels
        self.snac = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.load_decoder(model)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.speak_samples(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.speak_samples(args, state, model)

    def load_decoder(self, model) -> None:
        """SNAC on the model's device, once; an error names the setting to fix."""
        if self.snac is not None:
            return
        try:
            device = next(model.parameters()).device
            self.snac = codec.load_snac(self.snac_model, device, cpu_kernels=self.cpu_kernels)
        except Exception as error:
            raise RuntimeError(
                f"orpheus_sample_prompts: cannot load the SNAC model {self.snac_model!r} to speak samples ({error}). "
                "Set orpheus_snac_model to a SNAC 24 kHz hub id or a local folder with config.json and "
                "pytorch_model.bin that this machine can read, or remove orpheus_sample_prompts."
            ) from error

    def speak_samples(self, args, state, model) -> None:
        folder = Path(args.output_dir) / SAMPLES_FOLDER / f"step-{state.global_step}"
        # An evaluation at the last step and the end of training share a step: speak once.
        if not state.is_world_process_zero or model is None or folder.is_dir():
            return
        self.load_decoder(model)  # already loaded at train begin; here for an evaluation outside training
        LOG.info(f"Orpheus: speaking {len(self.prompts)} samples into {folder}")
        folder.mkdir(parents=True)
        clips = {}
        for index, prompt in enumerate(self.prompts):
            name = sample_name(index, prompt)
            clip = self.speak_sample(model, index, prompt, folder / f"{name}.wav", state.global_step)
            if clip is not None:
                clips[name] = clip
        self.log_audio(args, state.global_step, clips)

    def speak_sample(self, model, index: int, prompt: SamplePrompt, path: Path, step: int) -> np.ndarray | None:
        """The sample's audio, written to `path`; None when it fails, logged: a sample must never end training."""
        out_of_memory = False
        try:
            clip = speak.speak(
                model, self.tokenizer, self.snac, prompt.text, prompt.voice, seed=index,
                max_new_tokens=self.max_new_tokens,
            )
            write_wav(path, clip)
            return clip
        except Exception as error:
            LOG.warning(
                f"Orpheus: sample {path.stem} ({prompt.text!r}) failed at step {step}, skipped; training goes on: "
                f"{type(error).__name__}: {error}"
            )
            out_of_memory = isinstance(error, torch.OutOfMemoryError)
        if out_of_memory:
            # Only here, once the exception and the generation's tensors its traceback held are gone, is their
            # memory free to hand back for training.
            torch.cuda.empty_cache()
        return None

    def log_audio(self, args, step: int, clips: dict[str, np.ndarray]) -> None:
        if "wandb" in args.report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({f"{SAMPLES_FOLDER}/{name}": wandb.Audio(clip, sample_rate=SAMPLE_RATE)
                           for name, clip in clips.items()})
        for callback in self.callbacks:
            writer = getattr(callback, "tb_writer", None) if isinstance(callback, TensorBoardCallback) else None
            if writer is not None:
                for name, clip in clips.items():
                    writer.add_audio(f"{SAMPLES_FOLDER}/{name}", clip[None], step, sample_rate=SAMPLE_RATE)
                writer.flush()

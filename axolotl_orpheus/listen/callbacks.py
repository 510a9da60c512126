"""During training: hear the fine-tune (samples at each evaluation and at the end) and score it (eval_orpheus_*)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from axolotl_orpheus import codec
from axolotl_orpheus.args import OrpheusArgs, SamplePrompt
from axolotl_orpheus.audio import SAMPLE_RATE, write_wav
from axolotl_orpheus.listen import speak

LOG = logging.getLogger(__name__)
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
        self,
        prompts: list[SamplePrompt],
        tokenizer,
        snac_model: str,
        max_new_tokens: int,
        callbacks,
        cpu_kernels: bool = True,
    ):
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.snac_model = snac_model
        self.max_new_tokens = max_new_tokens
        self.callbacks = callbacks  # the trainer's, to find tensorboard's writer
        self.cpu_kernels = cpu_kernels
        self.snac = None
        self.spoken_steps: set[int] = set()

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
        if not state.is_world_process_zero or model is None or state.global_step in self.spoken_steps:
            return
        self.spoken_steps.add(state.global_step)
        self.load_decoder(model)  # already loaded at train begin; here for an evaluation outside training
        LOG.info(f"Orpheus: speaking {len(self.prompts)} samples into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
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
                model,
                self.tokenizer,
                self.snac,
                prompt.text,
                prompt.voice,
                seed=index,
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
                wandb.log(
                    {
                        f"{SAMPLES_FOLDER}/{name}": wandb.Audio(clip, sample_rate=SAMPLE_RATE)
                        for name, clip in clips.items()
                    }
                )
        for callback in self.callbacks:
            writer = getattr(callback, "tb_writer", None) if isinstance(callback, TensorBoardCallback) else None
            if writer is not None:
                for name, clip in clips.items():
                    writer.add_audio(f"{SAMPLES_FOLDER}/{name}", clip[None], step, sample_rate=SAMPLE_RATE)
                writer.flush()


class SpeechScorer(TrainerCallback):
    """Scores the fine-tune at each evaluation: speaks the eval split's first `orpheus_eval_samples` rows and
    returns the evaluation module's means as the trainer's metrics (eval_orpheus_cer, ...).

    They are the trainer's `compute_metrics`, so they land in the evaluation's own log entry (log_history, wandb,
    tensorboard) before early stopping and the best-checkpoint choice read it. The judges load when training
    begins, so a wrong model id stops training before its first step; a scoring that fails later is logged and
    gives NaN scores, and training goes on.
    """

    def __init__(self, trainer, settings: OrpheusArgs, voices: set[str]) -> None:
        self.trainer = trainer
        self.settings = settings
        self.voices = voices
        self.evaluation = None
        self.rows = None
        self.other_metrics = trainer.compute_metrics  # another scorer's (none in axolotl): its metrics are kept
        trainer.compute_metrics = self.compute_metrics
        if self.other_metrics is None and trainer.preprocess_logits_for_metrics is None:
            # compute_metrics makes evaluation gather predictions; these scores read none, so keep one value a row.
            trainer.preprocess_logits_for_metrics = self.drop_logits

    @staticmethod
    def drop_logits(logits, labels) -> torch.Tensor:
        return torch.zeros(len(logits), 1, device=logits.device)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.load_judges(model)

    def load_judges(self, model) -> None:
        """SNAC, Whisper, the speaker model and DNSMOS on the model's device, and the eval rows, once."""
        if self.evaluation is not None:
            return
        from axolotl_orpheus.listen.asr import ASR
        from axolotl_orpheus.listen.evaluation import Evaluation, prepared_rows
        from axolotl_orpheus.listen.quality import optional_judge
        from axolotl_orpheus.listen.voiceprint import SpeakerEncoder

        settings = self.settings
        device = next(model.parameters()).device
        try:
            snac = codec.load_snac(settings.orpheus_snac_model, device, cpu_kernels=settings.orpheus_cpu_kernels)
            asr = ASR(settings.orpheus_asr_model, device, settings.orpheus_eval_language)
            speakers = SpeakerEncoder(settings.orpheus_speaker_model, device)
        except Exception as error:
            raise RuntimeError(
                f"orpheus_eval_samples: cannot load a model that scores the samples: {error} Set orpheus_snac_model, "
                "orpheus_asr_model and orpheus_speaker_model to models this machine can load, or set "
                "orpheus_eval_samples: 0."
            ) from error
        quality = optional_judge(str(device))
        if quality is None and self.trainer.args.metric_for_best_model in ("orpheus_dnsmos", "eval_orpheus_dnsmos"):
            raise RuntimeError(
                "metric_for_best_model: eval_orpheus_dnsmos needs DNSMOS: pip install 'axolotl-orpheus[quality]'"
            )
        eval_dataset = self.trainer.eval_dataset
        count = min(settings.orpheus_eval_samples, len(eval_dataset))
        if count < settings.orpheus_eval_samples:
            LOG.warning(
                f"orpheus_eval_samples: {settings.orpheus_eval_samples}, but the eval split holds {len(eval_dataset)} "
                f"rows: scoring those {count}"
            )
        input_ids = eval_dataset.select(range(count))["input_ids"]
        self.rows = prepared_rows(input_ids, self.trainer.processing_class, snac, self.voices)
        self.evaluation = Evaluation(snac, asr, speakers, settings.orpheus_sample_max_new_tokens, quality=quality)
        LOG.info(f"Orpheus: scoring {count} eval rows at each evaluation")

    def compute_metrics(self, prediction, compute_result: bool = True) -> dict[str, float]:
        from axolotl_orpheus.listen.evaluation import METRICS

        metrics = self.other_metrics(prediction) if self.other_metrics is not None else {}
        if not compute_result:  # batch_eval_metrics: only the last batch's call gives the result
            return metrics
        scores = dict.fromkeys(METRICS, float("nan"))
        state = self.trainer.state
        if state.is_world_process_zero:
            scores.update(self.score(state.global_step))
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:  # every process decides on early stopping and the best checkpoint
            from accelerate.utils import broadcast_object_list

            scores = broadcast_object_list([scores])[0]
        return {**metrics, **scores}

    def score(self, step: int) -> dict[str, float]:
        folder = Path(self.trainer.args.output_dir) / SAMPLES_FOLDER / f"step-{step}"
        out_of_memory = False
        try:
            self.load_judges(self.trainer.model)  # loaded at train begin; here for an evaluation outside training
            report = self.evaluation.run(self.trainer.model, self.rows, folder)
        except Exception as error:
            LOG.warning(
                f"Orpheus: scoring at step {step} failed, scores are NaN; training goes on: "
                f"{type(error).__name__}: {error}"
            )
            out_of_memory = isinstance(error, torch.OutOfMemoryError)
        else:
            means = report["mean"]
            LOG.info(
                f"Orpheus: scored {len(self.rows)} samples at step {step} in {report['seconds']:.1f} s: "
                + ", ".join(f"{name.removeprefix('orpheus_')} {value:.3f}" for name, value in means.items())
                + f" ({folder})"
            )
            return means
        if out_of_memory:  # as for samples: once the traceback's tensors are gone
            torch.cuda.empty_cache()
        return {}

"""Speech recognition with Whisper through transformers: what scoring and segmenting hear in a clip.

One loader for every caller (the training scores, `evaluate`, `check-transcripts`, `segment`): a hub id or a
folder saved with `save_pretrained`, on one device, in eval mode. Clips arrive at any rate and are resampled
to Whisper's 16 kHz here.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch

from axolotl_orpheus import devices
from axolotl_orpheus.args import DEFAULT_ASR_MODEL
from axolotl_orpheus.audio import resample
from axolotl_orpheus.errors import UserError

LOG = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16000
WINDOW_SECONDS = 30  # Whisper hears 30 s at a time; longer clips are transcribed window by window
BATCH_SIZE = 8


def word_timing_problem(name_or_path: str, generation_config=None) -> str | None:
    """Why the Whisper `name_or_path` cannot time words (its generation config has no alignment_heads, the
    cross-attention heads transformers times words by), or None: it can, or its generation config cannot be read
    here (loading the model then says why). Reads the generation config alone, unless given it: quick."""
    if generation_config is None:
        from transformers import GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(name_or_path)
        except Exception:  # noqa: BLE001 - loading the model reports what is wrong with it
            return None
    if getattr(generation_config, "alignment_heads", None):
        return None
    return (
        f"the ASR model {name_or_path} cannot time words: its generation_config.json has no alignment_heads. To "
        f"fix: use a Whisper whose generation config has them, e.g. {DEFAULT_ASR_MODEL}"
    )


class Word(NamedTuple):
    text: str
    start: float  # seconds within the clip
    end: float


class Transcript(NamedTuple):
    text: str
    language: str | None  # Whisper's code, e.g. "en": the one asked for, else the one it detected
    words: list[Word] = []


class ASR:
    """A Whisper model and its processor, loaded once."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_ASR_MODEL,
        device: str | torch.device | None = None,
        language: str | None = None,
    ) -> None:
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        self.device = devices.pick_device(device)
        try:
            self.processor = AutoProcessor.from_pretrained(name_or_path)
            # Half precision where a GPU runs it well; CPU keeps float32.
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self.model = AutoModelForSpeechSeq2Seq.from_pretrained(name_or_path, dtype=dtype).to(self.device).eval()
        except Exception as error:
            raise RuntimeError(
                f"cannot load the ASR model {name_or_path!r} ({type(error).__name__}: {error}). To fix: give a "
                "Whisper hub id (e.g. openai/whisper-large-v3-turbo) this machine can download, or a local folder "
                "saved with save_pretrained (model and processor)."
            ) from error
        self.name = name_or_path
        self.language = language
        self.word_pipeline = None  # transformers' ASR pipeline on the same model, built for the first word timings
        self.languages = {
            token_id: token.strip("<|>")
            for token, token_id in (getattr(self.model.generation_config, "lang_to_id", None) or {}).items()
        }
        LOG.info(f"ASR {name_or_path} on {self.device}")

    @property
    def english_spelling(self) -> dict[str, str]:
        """Whisper's British-to-American spellings (normalizer.json), as its English normaliser uses them."""
        return getattr(self.processor.tokenizer, "english_spelling_normalizer", None) or {}

    def _features(self, clips: list[np.ndarray], sample_rate: int) -> dict[str, torch.Tensor]:
        clips = [resample(np.asarray(clip, dtype=np.float32), sample_rate, ASR_SAMPLE_RATE) for clip in clips]
        longest = max(len(clip) for clip in clips)
        # Up to 30 s Whisper takes each clip padded to 30 s; past that, the whole clip, window by window.
        long_form = longest > WINDOW_SECONDS * ASR_SAMPLE_RATE
        features = self.processor.feature_extractor(
            clips,
            sampling_rate=ASR_SAMPLE_RATE,
            return_tensors="pt",
            return_attention_mask=True,
            **({"truncation": False, "padding": "longest"} if long_form else {}),
        )
        return {
            "input_features": features.input_features.to(self.device, self.model.dtype),
            "attention_mask": features.attention_mask.to(self.device),
        }

    @torch.inference_mode()
    def transcribe(self, clips: list[np.ndarray], sample_rate: int, batch_size: int = BATCH_SIZE) -> list[Transcript]:
        """Each clip's text and language, `batch_size` clips per generation."""
        transcripts: list[Transcript] = []
        for start in range(0, len(clips), batch_size):
            features = self._features(clips[start : start + batch_size], sample_rate)
            languages = [self.language] * len(features["input_features"]) if self.language else self._detect(features)
            tokens = self.model.generate(**features, task="transcribe", language=languages)
            texts = self.processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
            transcripts += [Transcript(text.strip(), language) for text, language in zip(texts, languages)]
        return transcripts

    def _detect(self, features: dict[str, torch.Tensor]) -> list[str]:
        """Whisper's language for each clip, from its first 30 s."""
        window = features["input_features"][..., : WINDOW_SECONDS * 100]  # 100 feature frames a second
        if window.shape[-1] < WINDOW_SECONDS * 100:
            window = torch.nn.functional.pad(window, (0, WINDOW_SECONDS * 100 - window.shape[-1]))
        return [self.languages[int(token_id)] for token_id in self.model.detect_language(window)]

    @torch.inference_mode()
    def transcribe_words(self, clip: np.ndarray, sample_rate: int) -> Transcript:
        """One clip's text with each word's start and end, from Whisper's cross-attention (any length)."""
        from transformers import pipeline

        problem = word_timing_problem(self.name, self.model.generation_config)
        if problem:
            raise UserError(problem)

        if self.word_pipeline is None:
            self.word_pipeline = pipeline(
                "automatic-speech-recognition",
                model=self.model,
                tokenizer=self.processor.tokenizer,
                feature_extractor=self.processor.feature_extractor,
                device=self.device,
            )
        features = self._features([clip], sample_rate)
        language = self.language or self._detect(features)[0]
        heard = self.word_pipeline(
            {
                "raw": resample(np.asarray(clip, dtype=np.float32), sample_rate, ASR_SAMPLE_RATE),
                "sampling_rate": ASR_SAMPLE_RATE,
            },
            return_timestamps="word",
            generate_kwargs={"language": language, "task": "transcribe"},
        )
        words = [Word(chunk["text"].strip(), *chunk["timestamp"]) for chunk in heard["chunks"]]
        return Transcript(heard["text"].strip(), language, words)

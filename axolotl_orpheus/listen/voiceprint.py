"""Speaker embeddings (x-vectors) through transformers: how alike two clips' voices sound."""

from __future__ import annotations

import logging

import numpy as np
import torch

from axolotl_orpheus import devices
from axolotl_orpheus.args import DEFAULT_SPEAKER_MODEL
from axolotl_orpheus.audio import resample

LOG = logging.getLogger(__name__)

BATCH_SIZE = 8
# An x-vector's convolutions need about a third of a second; a sample that stopped after a frame or two (85 ms
# each) is padded with silence to this, so it scores (badly) instead of failing.
MIN_SECONDS = 0.5


class SpeakerEncoder:
    """An x-vector model (e.g. WavLM's) and its feature extractor, loaded once."""

    def __init__(self, name_or_path: str = DEFAULT_SPEAKER_MODEL, device: str | torch.device | None = None) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

        self.name = name_or_path
        self.device = devices.pick_device(device)
        try:
            self.features = AutoFeatureExtractor.from_pretrained(name_or_path)
            self.model = AutoModelForAudioXVector.from_pretrained(name_or_path).to(self.device).eval()
        except Exception as error:
            raise RuntimeError(
                f"cannot load the speaker model {name_or_path!r} ({type(error).__name__}: {error}). To fix: give an "
                "x-vector hub id (e.g. microsoft/wavlm-base-plus-sv) this machine can download, or a local folder "
                "saved with save_pretrained (model and feature extractor)."
            ) from error
        LOG.info(f"Speaker model {name_or_path} on {self.device}")

    @torch.inference_mode()
    def embed(self, clips: list[np.ndarray], sample_rate: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """One embedding row per clip, clips padded to the longest of their batch and masked."""
        rate = self.features.sampling_rate
        embeddings = []
        for start in range(0, len(clips), batch_size):
            batch = [
                resample(np.asarray(clip, dtype=np.float32), sample_rate, rate)
                for clip in clips[start : start + batch_size]
            ]
            batch = [np.pad(clip, (0, max(0, int(MIN_SECONDS * rate) - len(clip)))) for clip in batch]
            inputs = self.features(
                batch, sampling_rate=rate, padding=True, return_attention_mask=True, return_tensors="pt"
            )
            embeddings.append(self.model(**inputs.to(self.device)).embeddings.float().cpu().numpy())
        return np.concatenate(embeddings)

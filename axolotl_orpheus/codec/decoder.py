"""Decoding SNAC codes to audio, seeded so that the same codes give the same samples."""

from __future__ import annotations

import numpy as np
import torch
from snac import SNAC

from axolotl_orpheus.devices import exact_fp32
from axolotl_orpheus.layout import Codes
from axolotl_orpheus.reproducible import seeded


@torch.inference_mode()
@exact_fp32()
def decode(model: SNAC, codes: Codes, seed: int = 0) -> np.ndarray:
    """24 kHz mono float32 audio of one clip's codes, n * 2048 samples long.

    SNAC's decoder draws noise even in eval mode; a fixed seed makes the audio reproducible without
    touching the caller's random state.
    """
    device = next(model.parameters()).device
    levels = [torch.as_tensor(np.asarray(level), dtype=torch.long, device=device)[None] for level in codes]
    with seeded(seed, device):
        return model.decode(levels)[0, 0].float().cpu().numpy()

"""Loading SNAC: its files from a folder or the hub, its weights read safely, the fast path put in place."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from snac import SNAC

from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.codec import fast
from axolotl_orpheus.devices import pick_device
from axolotl_orpheus.layout import SAMPLES_PER_FRAME
from axolotl_orpheus.reproducible import files_digest

LOG = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"


def snac_files(name_or_path: str) -> tuple[Path, Path]:
    """config.json and pytorch_model.bin of a local SNAC folder or a hub repo (downloaded and cached)."""
    if os.path.isdir(name_or_path):
        folder = Path(name_or_path)
        files = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"SNAC folder {name_or_path} lacks {', '.join(missing)}; it needs {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, as the hub repo hubertsiuzdak/snac_24khz has"
            )
        return files
    from huggingface_hub import hf_hub_download

    return (
        Path(hf_hub_download(name_or_path, CONFIG_FILE)),
        Path(hf_hub_download(name_or_path, WEIGHTS_FILE)),
    )


def weights_digest(name_or_path: str) -> str:
    """A digest of the SNAC weights, so that prepared rows are tied to the exact model that made them."""
    return files_digest(snac_files(name_or_path))


def check_snac_config(name_or_path: str, config: dict) -> None:
    """Orpheus' codes come from the 24 kHz SNAC with 3 levels and 2048-sample frames; refuse any other."""
    rate, strides = config.get("sampling_rate"), config.get("vq_strides")
    hop = int(np.prod(config.get("encoder_rates") or [0]))
    if rate != SAMPLE_RATE or strides != [4, 2, 1] or hop * 4 != SAMPLES_PER_FRAME:
        raise ValueError(
            f"SNAC model {name_or_path} is a {rate} Hz model with vq_strides {strides} and hop {hop}; Orpheus "
            f"needs the 24 kHz model with 3 levels (vq_strides [4, 2, 1], hop 512): set orpheus_snac_model: "
            "hubertsiuzdak/snac_24khz"
        )


def load_stock_snac(name_or_path: str, device: torch.device | str = "cpu") -> SNAC:
    """SNAC in eval mode on `device`, exactly as its own package builds it, its weights read with weights_only=True.

    `SNAC.from_pretrained` calls plain torch.load, which would execute any pickle in a downloaded file.
    """
    config_file, weights_file = snac_files(name_or_path)
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    check_snac_config(name_or_path, config)
    model = SNAC(**config)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def load_snac(
    name_or_path: str, device: torch.device | str | None = None, compile_encoder: bool = False, cpu_kernels: bool = True
) -> SNAC:
    """SNAC for inference on `device` (`pick_device`), with the same values as stock SNAC's (fast_snac); the C
    kernels run on CPU unless `cpu_kernels` is false.

    With `compile_encoder`, the encoder is compiled with torch.compile, for every clip length at once:
    Inductor fuses each Snake into one pass and computes its sin with Sleef instead of the MKL sin that eager
    torch calls on CPU, where a fraction of the sines differ in the last bit, and so do a few codes; hence
    opt-in. torch caches the compiled kernels on disk (TORCHINDUCTOR_CACHE_DIR): only the first compilation is slow.
    """
    model = load_stock_snac(name_or_path)
    device = pick_device(str(device) if device else None)
    if compile_encoder:  # Inductor cannot trace into the C kernels; it fuses torch's forms itself
        path = fast.speed_up(model, c_kernels=False) + ", the encoder compiled (orpheus_compile)"
        model.encoder = torch.compile(model.encoder, dynamic=True)
    elif device.type != "cpu":  # on GPUs torch's kernels are fast; their exactness is cuDNN's
        path = fast.speed_up(model, c_kernels=False)
    else:
        path = fast.speed_up(model, c_kernels=cpu_kernels)
        path += "" if cpu_kernels else " (orpheus_cpu_kernels: false)"
    LOG.info(f"SNAC {name_or_path} on {device}: {path}")
    return model.to(device)

"""Reproducible by construction: random draws from a fixed seed that leave the caller's state alone, and
digests of files that name exactly what made an output."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

READ_BYTES = 1 << 22  # files are hashed this many bytes at a time


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """torch's random state seeded with `seed` inside, the caller's (CPU, and `device`'s when CUDA) restored after."""
    with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def files_digest(paths: Iterable[Path]) -> str:
    """The sha256 of the files' contents one after another, read a block at a time."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(READ_BYTES):
                digest.update(block)
    return digest.hexdigest()

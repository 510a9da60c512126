"""The codes cache: SNAC codes on disk, keyed by audio content, SNAC weights and the audio pipeline.

Encoding is the whole cost of preprocessing. With the codes cached, re-running `axolotl preprocess` after
changing only text, prompt or label options reads codes instead of encoding, and several nodes can fill
one shared cache in parallel (see the README's multi-node recipe).

Layout: <root>/<namespace>/<key[:2]>/<key>.codes, where the namespace digests the SNAC weights, the
decode/resample pipeline and the encoder (eager or compiled), and the key digests a clip's encoded bytes.
An entry holds the facts the row checks need without decoding again (the clip's length and warnings), then
the three levels of codes as int16: float64 seconds, uint8 n, n bytes of comma-separated warnings, codes.
An entry's mtime is its last use (written, or read on a later day), which `delete_unused` goes by.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile
import soxr

from axolotl_orpheus import __version__, codec
from axolotl_orpheus.audio import SAMPLE_RATE

CACHE_FOLDER = "orpheus_codes"  # under datasets' cache folder by default
ABOUT_FILE = "about.json"
DAY = 24 * 3600  # seconds
# Whatever turns a clip's bytes into codes, besides the SNAC weights: a change here must miss.
PIPELINE = (
    f"entry format 1; libsndfile {soundfile.__libsndfile_version__}; mono mean; soxr {soxr.__version__} HQ to {SAMPLE_RATE} Hz; "
    f"windows of {codec.WINDOW_FRAMES} frames with {codec.CONTEXT_FRAMES} of context; "
    "IEEE fp32 (TF32 off)"  # earlier GPU entries came from TF32, which changes codes
)


def audio_key(data: bytes) -> str:
    """The cache key of a clip: a digest of its encoded bytes (fast: about 1 GB/s)."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def default_root() -> Path:
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / CACHE_FOLDER


@dataclass(frozen=True)
class Entry:
    """One clip's cached codes and what the row checks need to know about its audio."""

    codes: codec.Codes
    seconds: float
    warnings: tuple[str, ...]


class CodesCache:
    """Codes of one SNAC model's weights through one audio pipeline. Safe for many writers: entries are
    written to a temporary file and renamed into place, and identical inputs write identical entries."""

    def __init__(self, root: Path, snac_digest: str, compiled: bool = False, snac_name: str = ""):
        self.root = Path(root)
        encoder = "compiled" if compiled else "eager"  # compiled codes differ slightly: never mixed with eager
        namespace = hashlib.sha256(f"{snac_digest}|{PIPELINE}|{encoder}".encode()).hexdigest()[:16]
        self.folder = self.root / namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        about = self.folder / ABOUT_FILE
        if not about.exists():  # for people looking into the folder
            about.write_text(json.dumps({"snac_model": snac_name, "snac_sha256": snac_digest, "pipeline": PIPELINE, "encoder": encoder,
                                         "written_by": f"axolotl-orpheus {__version__}"}, indent=2) + "\n")

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.codes"

    def get(self, key: str) -> Entry | None:
        """The entry for `key`, or None; an unreadable entry (a write cut short) counts as missing."""
        path = self.path(key)
        try:
            with open(path, "rb") as handle:
                used = os.fstat(handle.fileno()).st_mtime
                data = handle.read()
            seconds, size = struct.unpack_from("<dB", data)
            warnings = data[9 : 9 + size].decode()
            codes = np.frombuffer(data, "<i2", offset=9 + size).astype(np.int64)
        except (OSError, ValueError, struct.error, UnicodeDecodeError):
            return None
        frames = len(codes) // 7  # n + 2n + 4n codes
        if frames == 0 or len(codes) != 7 * frames:
            return None
        # A hit marks the entry used (its mtime), which `axolotl-orpheus cache --delete-unused-for` goes by;
        # at most once a day, so a re-run writes once per entry per day, not on every read.
        if used < time.time() - DAY:
            with suppress(OSError):  # a read-only cache is still read
                os.utime(path)
        levels = codes[:frames], codes[frames : 3 * frames], codes[3 * frames :]
        return Entry(levels, seconds, tuple(warnings.split(",")) if warnings else ())

    def put(self, key: str, entry: Entry) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)  # parents: the namespace may have been pruned meanwhile
        warnings = ",".join(entry.warnings).encode()
        # SNAC's codebooks have 4096 entries: int16 holds every code in a quarter of the space.
        codes = np.concatenate([np.asarray(level) for level in entry.codes]).astype("<i2")
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(struct.pack("<dB", entry.seconds, len(warnings)) + warnings + codes.tobytes())
        os.replace(temporary, path)


@contextmanager
def open_cache(setting: bool | str, snac_digest: str, compiled: bool, snac_name: str) -> Iterator[CodesCache]:
    """orpheus_codes_cache: true (datasets' cache folder), a folder, or false (a folder for this run only)."""
    if setting is False:
        with tempfile.TemporaryDirectory(prefix="orpheus-codes-") as folder:
            yield CodesCache(Path(folder), snac_digest, compiled, snac_name)
        return
    yield CodesCache(default_root() if setting is True else Path(setting), snac_digest, compiled, snac_name)


@dataclass(frozen=True)
class Namespace:
    """One namespace of a cache folder, as `axolotl-orpheus cache` lists it."""

    folder: Path
    about: dict  # what filled it: SNAC model and weights digest, pipeline, encoder
    entries: int
    disk_bytes: int  # allocated on disk: each small entry takes at least a filesystem block
    last_used: float | None  # the newest entry's mtime: written, or read on a later day


def _files(folder: Path, pattern: str) -> Iterator[tuple[Path, os.stat_result]]:
    for path in folder.glob(pattern):
        with suppress(FileNotFoundError):  # deleted meanwhile, by another process pruning
            yield path, path.stat()


def _namespace_folders(root: Path) -> list[Path]:
    return sorted(path for path in Path(root).glob("*") if path.is_dir())


def namespaces(root: Path) -> list[Namespace]:
    """The namespaces in a cache folder, with their entries' count, disk use and last use."""
    found = []
    for folder in _namespace_folders(root):
        stats = [stat for _, stat in _files(folder, "*/*.codes")]
        try:
            about = json.loads((folder / ABOUT_FILE).read_text())
        except (OSError, ValueError):
            about = {}
        found.append(Namespace(folder, about, len(stats), sum(stat.st_blocks * 512 for stat in stats),
                               max((stat.st_mtime for stat in stats), default=None)))
    return found


def delete_unused(root: Path, days: float) -> tuple[int, int]:
    """Delete the entries (and left-over temporary files) not used for `days` days, and namespaces left
    empty; returns the entries deleted and the bytes of disk they held."""
    cutoff = time.time() - days * DAY
    deleted = freed = 0
    for folder in _namespace_folders(root):
        for path, stat in [*_files(folder, "*/*.codes"), *_files(folder, "*/*.tmp")]:
            if stat.st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += path.suffix == ".codes"
                freed += stat.st_blocks * 512
        about = folder / ABOUT_FILE  # written when the namespace was first opened
        if not any(folder.glob("*/*.codes")) and (not about.exists() or about.stat().st_mtime < cutoff):
            shutil.rmtree(folder, ignore_errors=True)
    return deleted, freed

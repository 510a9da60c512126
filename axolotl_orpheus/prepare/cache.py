"""The codes cache: SNAC codes on disk, keyed by audio content, SNAC weights and the audio pipeline.

Encoding is the whole cost of preprocessing. With the codes cached, re-running `axolotl preprocess` after
changing only text, prompt or label options reads codes instead of encoding, and several nodes can fill
one shared cache in parallel (docs/scale-out.md).

Layout: <root>/<namespace>/<key[:2]>/<key>.codes, where the namespace digests the SNAC weights, the
decode/resample pipeline and the encoder (eager or compiled), and the key digests a clip's encoded bytes.
An entry checks itself: a header (magic, format, a checksum of the rest), then the facts the row checks
need without decoding again (frame count, the clip's length and warnings), then the three levels of codes
as uint16. A file that fails any check (cut short, zeros after a power loss, a flipped bit) reads as
missing, so its clip is encoded again and the entry rewritten, and the cache counts it (`damaged`).
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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from axolotl_orpheus import __version__
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.layout import CODEBOOK_SIZE, CONTEXT_FRAMES, TOKENS_PER_FRAME, WINDOW_FRAMES, Codes

CACHE_FOLDER = "orpheus_codes"  # under datasets' cache folder by default
ABOUT_FILE = "about.json"
DAY = 24 * 3600  # seconds
# How often a writer marks its namespace in use (about.json's mtime): `delete_unused` keeps a namespace so marked
# within its cutoff, so that it never deletes one that a running preprocess is writing into.
IN_USE_SECONDS = 3600
MAGIC = b"ORPC"
ENTRY_FORMAT = 2
HEADER = struct.Struct("<4sH16s")  # magic, entry format, blake2b-128 of everything after the header
FACTS = struct.Struct("<IdH")  # frames, seconds, bytes of comma-separated warnings
SCORES_FORMAT = 1001  # a scores entry: the header, then float64s (never read as codes)
ENTRY_PATTERNS = ("*/*.codes", "*/*.scores")
# Whatever turns a clip's bytes into codes, besides the SNAC weights: a change here must miss.
PIPELINE = (
    f"entry format {ENTRY_FORMAT}; libsndfile {soundfile.__libsndfile_version__}; mono mean; "
    f"soxr {soxr.__version__} HQ to {SAMPLE_RATE} Hz; "
    f"windows of {WINDOW_FRAMES} frames with {CONTEXT_FRAMES} of context; "
    "IEEE fp32 (TF32 off)"  # TF32 changes codes: entries made with it must miss
)


def default_root() -> Path:
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / CACHE_FOLDER


@dataclass(frozen=True)
class Entry:
    """One clip's cached codes and what the row checks need to know about its audio."""

    codes: Codes
    seconds: float
    warnings: tuple[str, ...]


def _checksum(body: bytes | memoryview) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def seal(body: bytes) -> bytes:
    """An entry file's bytes: the header (magic, format, checksum of `body`), then `body`."""
    return HEADER.pack(MAGIC, ENTRY_FORMAT, _checksum(body)) + body


def pack_codes(codes: Codes) -> bytes:
    """A clip's three levels (n, 2n and 4n codes) as uint16, the cache's width: 14 bytes per frame. uint16 holds
    every code of SNAC's 4096-entry codebooks in a quarter of int64's space."""
    return np.concatenate([np.asarray(level) for level in codes]).astype("<u2").tobytes()


def unpack_codes(data: bytes, offset: int = 0) -> Codes:
    """The three levels that `pack_codes` wrote from `offset` on, as int64."""
    codes = np.frombuffer(data, "<u2", offset=offset).astype(np.int64)
    n = len(codes) // TOKENS_PER_FRAME
    return codes[:n], codes[n : 3 * n], codes[3 * n :]


def _pack(entry: Entry) -> bytes:
    first, second, third = (np.asarray(level) for level in entry.codes)
    frames = len(first)
    if frames == 0 or (len(second), len(third)) != (2 * frames, 4 * frames):
        raise ValueError(
            f"SNAC codes are levels of n, 2n and 4n codes (n >= 1), not of {len(first)}, {len(second)} and {len(third)}"
        )
    codes = np.concatenate([first, second, third])
    if codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
        raise ValueError(f"SNAC codes are in 0..{CODEBOOK_SIZE - 1}, not {codes.min()}..{codes.max()}")
    warnings = ",".join(entry.warnings).encode()
    return seal(FACTS.pack(frames, entry.seconds, len(warnings)) + warnings + pack_codes(entry.codes))


def _unpack(data: bytes) -> Entry | None:
    """The entry `data` holds, or None when it is not one whole, intact entry."""
    if len(data) < HEADER.size + FACTS.size:
        return None
    magic, entry_format, checksum = HEADER.unpack_from(data)
    if magic != MAGIC or entry_format != ENTRY_FORMAT or checksum != _checksum(memoryview(data)[HEADER.size :]):
        return None
    frames, seconds, size = FACTS.unpack_from(data, HEADER.size)
    start = HEADER.size + FACTS.size + size
    if frames == 0 or len(data) != start + 2 * TOKENS_PER_FRAME * frames:  # 7 codes a frame, 2 bytes each
        return None
    levels = unpack_codes(data, start)
    if max(level.max() for level in levels) >= CODEBOOK_SIZE:  # a checksum over wrong codes: a writer's bug
        return None
    try:
        warnings = data[HEADER.size + FACTS.size : start].decode()
    except UnicodeDecodeError:
        return None
    return Entry(levels, seconds, tuple(warnings.split(",")) if warnings else ())


class _Entries:
    """Self-checking entries in one namespace folder of a cache root. Safe for many writers: entries are written to a
    temporary file and renamed into place, and identical inputs write identical entries."""

    suffix = ".codes"

    def __init__(self, root: Path, namespace: str, about: dict):
        self.root = Path(root)
        self._damaged: set[str] = set()
        self.folder = self.root / namespace
        self.about = about
        self.folder.mkdir(parents=True, exist_ok=True)
        self._mark_in_use()

    def _mark_in_use(self) -> None:
        """Touch about.json, writing it where it is missing (for people looking into the folder): `delete_unused`
        keeps a namespace whose about.json is newer than its cutoff."""
        about = self.folder / ABOUT_FILE
        try:
            os.utime(about)
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            about.write_text(json.dumps(self.about, indent=2) + "\n")
        except OSError:  # a read-only cache is still read
            pass
        self._marked = time.monotonic()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{self.suffix}"

    @property
    def damaged(self) -> int:
        """Entries found damaged or unreadable this run, each counted once: they read as missing."""
        return len(self._damaged)

    def _unpack(self, data: bytes):
        raise NotImplementedError

    def get(self, key: str):
        """The entry for `key`, or None; a damaged entry counts as missing (and in `damaged`)."""
        path = self.path(key)
        try:
            with open(path, "rb") as handle:
                used = os.fstat(handle.fileno()).st_mtime
                entry = self._unpack(handle.read())
        except FileNotFoundError:
            return None
        except OSError:
            entry = None
        if entry is None:
            self._damaged.add(key)
            return None
        # A hit marks the entry used (its mtime), which `axolotl-orpheus cache --delete-unused-for` goes by;
        # at most once a day, so a re-run writes once per entry per day, not on every read.
        if used < time.time() - DAY:
            with suppress(OSError):  # a read-only cache is still read
                os.utime(path)
        return entry

    def _write(self, key: str, data: bytes) -> None:
        if time.monotonic() - self._marked > IN_USE_SECONDS:
            self._mark_in_use()
        path = self.path(key)
        for attempt in range(3):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.tmp")
                # Mode 0o666 less the umask (mkstemp's 0o600 hides entries from the other accounts of a shared folder).
                handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())  # else a power loss after the rename can leave an entry of zeros
                os.replace(temporary, path)
                return
            except FileNotFoundError:  # `delete_unused` (--delete-unused-for 0) removed the namespace meanwhile
                if attempt == 2:
                    raise
                self._mark_in_use()


class CodesCache(_Entries):
    """Codes of one SNAC model's weights through one audio pipeline."""

    def __init__(self, root: Path, snac_digest: str, compiled: bool = False, snac_name: str = ""):
        encoder = "compiled" if compiled else "eager"  # compiled codes differ slightly: never mixed with eager
        namespace = hashlib.sha256(f"{snac_digest}|{PIPELINE}|{encoder}".encode()).hexdigest()[:16]
        about = {
            "snac_model": snac_name,
            "snac_sha256": snac_digest,
            "pipeline": PIPELINE,
            "encoder": encoder,
            "written_by": f"axolotl-orpheus {__version__}",
        }
        super().__init__(root, namespace, about)

    def _unpack(self, data: bytes) -> Entry | None:
        return _unpack(data)

    def put(self, key: str, entry: Entry) -> None:
        """Write `entry`; raises ValueError for codes SNAC cannot have made."""
        self._write(key, _pack(entry))


class ScoresCache(_Entries):
    """A quality judge's scores of clips (a tuple of floats each, e.g. DNSMOS's), beside the codes of the same
    clips: keyed by the same audio content, in a namespace of the judge's models and how a clip reaches them."""

    suffix = ".scores"

    def __init__(self, root: Path, judge: str, judge_digest: str, pipeline: str):
        namespace = hashlib.sha256(f"{judge_digest}|{SCORES_FORMAT}|{pipeline}".encode()).hexdigest()[:16]
        about = {
            "judge": judge,
            "judge_sha256": judge_digest,
            "pipeline": f"scores format {SCORES_FORMAT}; {pipeline}",
            "written_by": f"axolotl-orpheus {__version__}",
        }
        super().__init__(root, namespace, about)

    def _unpack(self, data: bytes) -> tuple[float, ...] | None:
        if len(data) < HEADER.size or (len(data) - HEADER.size) % 8:
            return None
        magic, entry_format, checksum = HEADER.unpack_from(data)
        body = memoryview(data)[HEADER.size :]
        if magic != MAGIC or entry_format != SCORES_FORMAT or checksum != _checksum(body):
            return None
        return tuple(np.frombuffer(body, "<f8").tolist())

    def put(self, key: str, scores: tuple[float, ...]) -> None:
        body = np.asarray(scores, "<f8").tobytes()
        self._write(key, HEADER.pack(MAGIC, SCORES_FORMAT, _checksum(body)) + body)


@contextmanager
def open_cache(setting: bool | str, snac_digest: str, compiled: bool, snac_name: str) -> Iterator[CodesCache]:
    """orpheus_codes_cache: true (datasets' cache folder), a folder (`~` is the home folder, a relative
    one the current folder's), or false (a folder for this run only). The cache's root is absolute."""
    if setting is False:
        with tempfile.TemporaryDirectory(prefix="orpheus-codes-") as folder:
            yield CodesCache(Path(folder), snac_digest, compiled, snac_name)
        return
    root = default_root() if setting is True else Path(setting)
    yield CodesCache(root.expanduser().absolute(), snac_digest, compiled, snac_name)


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
        stats = [stat for pattern in ENTRY_PATTERNS for _, stat in _files(folder, pattern)]
        try:
            about = json.loads((folder / ABOUT_FILE).read_text())
        except (OSError, ValueError):
            about = {}
        found.append(
            Namespace(
                folder,
                about,
                len(stats),
                sum(stat.st_blocks * 512 for stat in stats),
                max((stat.st_mtime for stat in stats), default=None),
            )
        )
    return found


def delete_unused(root: Path, days: float) -> tuple[int, int]:
    """Delete the entries (and left-over temporary files) not used for `days` days, and namespaces left
    empty; returns the entries deleted and the bytes of disk they held."""
    cutoff = time.time() - days * DAY
    deleted = freed = 0
    for folder in _namespace_folders(root):
        for path, stat in [entry for pattern in (*ENTRY_PATTERNS, "*/*.tmp") for entry in _files(folder, pattern)]:
            if stat.st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += path.suffix != ".tmp"
                freed += stat.st_blocks * 512
        about = folder / ABOUT_FILE  # touched by each run that opens the namespace, and hourly as it writes
        empty = not any(any(folder.glob(pattern)) for pattern in ENTRY_PATTERNS)
        if empty and (not about.exists() or about.stat().st_mtime < cutoff):
            shutil.rmtree(folder, ignore_errors=True)
    return deleted, freed


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def listing(root: Path) -> str:
    """What `axolotl-orpheus cache` prints: the cache's clips and disk use, then each namespace's."""
    found = namespaces(root)
    if not found:
        return f"no codes in {root}"
    clips, size = sum(n.entries for n in found), sum(n.disk_bytes for n in found)
    lines = [
        f"codes cache {root}: {plural(clips, 'clip')}, {size / 1e6:.1f} MB on disk, "
        f"in {plural(len(found), 'namespace')}"
    ]
    for namespace in found:
        about = namespace.about
        used = time.strftime("%Y-%m-%d", time.localtime(namespace.last_used)) if namespace.last_used else "never"
        lines.append(
            f"  {namespace.folder.name}  {about.get('judge') or about.get('snac_model') or 'SNAC model unknown'} "
            f"({about.get('encoder', 'scores')}): {plural(namespace.entries, 'clip')}, "
            f"{namespace.disk_bytes / 1e6:.1f} MB, last used {used}"
        )
        lines.append(f"      {about.get('pipeline', '')} (written by {about.get('written_by', '?')})")
    return "\n".join(lines)

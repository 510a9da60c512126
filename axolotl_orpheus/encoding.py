"""Encoding the clips the codes cache lacks, as fast as SNAC allows without changing a code.

The clips are sorted by length across the whole dataset, so clips of the same padded length fill exact
batches (SNAC's encoder is non-causal: only equal lengths batch without changing a code). The longest come
first: their activations size the heap that encoding keeps (codec.keep_freed_memory), and every later one
fits in memory they freed, where shortest first grows the heap at each new length. Threads decode and
resample the next chunk while SNAC encodes this one. With several devices, each gets one SNAC replica in a
spawned process and an equal share of the work.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from axolotl_orpheus import audio, codec
from axolotl_orpheus.cache import CodesCache, Entry
from axolotl_orpheus.layout import SAMPLES_PER_FRAME

BATCHES_PER_CHUNK = 4  # batches' worth of clips decoded at a time: enough equal lengths to fill batches

# In each process of a shared encoding (encode_missing with several devices): an event that any of them sets
# on a bad clip when the run is to raise, so that all stop instead of only the one that met it.
_stop: Any = None


def _share_stop(event: Any) -> None:
    global _stop
    _stop = event


class Job(NamedTuple):
    """A row whose clip must be encoded and cached under `key`."""

    row: int
    key: str
    seconds: float  # from the file header: orders and sizes the work, never decides a code


@dataclass
class AudioColumn:
    """Where the jobs' audio is: a dataset's column (picklable, for spawned processes)."""

    dataset: Any  # datasets.Dataset
    column: str
    base_dir: str | None

    def sources(self, rows: list[int]) -> list[Any]:
        return self.dataset.select_columns([self.column])[rows][self.column]


@dataclass(frozen=True)
class EncodeSettings:
    snac_model: str
    batch_size: int | None  # clips per batch; None: codec.BATCH_SECONDS of audio
    compile: bool
    stop_at_failure: bool = False  # the run will raise on the first bad clip: encoding on is wasted time


def length_chunks(jobs: list[Job], batch_size: int | None, batches: int = BATCHES_PER_CHUNK) -> list[list[Job]]:
    """The jobs sorted by padded length, longest first, in chunks of `batches` batches (codec.clips_per_batch)."""

    def frames(job: Job) -> int:
        return math.ceil(job.seconds * audio.SAMPLE_RATE / SAMPLES_PER_FRAME)

    chunks: list[list[Job]] = []
    filled = 0.0  # batches' worth in the last chunk
    for job in sorted(jobs, key=lambda job: (-frames(job), job.row)):
        if not chunks or filled >= batches - 1e-9:  # the tolerance absorbs float sums such as 12 * (1 / 3)
            chunks.append([])
            filled = 0.0
        chunks[-1].append(job)
        filled += 1 / codec.clips_per_batch(frames(job), batch_size)
    return chunks


def _load(source: Any, base_dir: str | None) -> audio.Clip | audio.AudioError:
    try:
        return audio.load_checked_clip(source, base_dir)
    except audio.AudioError as exc:
        return exc


def encode_share(
    jobs: list[Job], column: AudioColumn, cache: CodesCache, settings: EncodeSettings, device: str,
    position: int = 0, threads: int | None = None,
) -> dict[int, audio.AudioError]:
    """Encode `jobs` on `device` into the cache; returns the rows whose audio SNAC cannot encode (with
    stop_at_failure, the first chunk's that has any, leaving that chunk and the rest unencoded, and in
    every process sharing the work)."""
    if threads:
        torch.set_num_threads(threads)
    chunks = length_chunks(jobs, settings.batch_size)
    model = codec.load_snac(settings.snac_model, device, compile_encoder=settings.compile)
    on_cpu = torch.device(device).type == "cpu"
    # On CPU, torch's threads already use every core; on a GPU, CPU decoding is what keeps it busy.
    decoders = ThreadPoolExecutor(1 if on_cpu else min(8, multiprocessing.cpu_count()))

    def decode(part: list[Job]) -> list[Future]:
        return [decoders.submit(_load, source, column.base_dir) for source in column.sources([j.row for j in part])]

    failed: dict[int, audio.AudioError] = {}
    progress = tqdm(
        total=round(sum(job.seconds for job in jobs)), unit="audio-s", position=position,
        desc=f"Orpheus: SNAC encoding on {device}", disable=not jobs,
    )
    encoded_seconds = 0.0
    with decoders, progress, codec.keep_freed_memory():
        upcoming = decode(chunks[0]) if chunks else []
        for index, part in enumerate(chunks):
            if _stop is not None and _stop.is_set():  # another process met a bad clip: the run will raise
                break
            loaded = [future.result() for future in upcoming]
            upcoming = decode(chunks[index + 1]) if index + 1 < len(chunks) else []
            clips = []
            for job, clip in zip(part, loaded):
                if isinstance(clip, audio.AudioError):
                    failed[job.row] = clip
                else:
                    clips.append((job, clip))
            if failed and settings.stop_at_failure:
                if _stop is not None:
                    _stop.set()
                break
            codes = codec.encode(model, [clip.samples for _, clip in clips], settings.batch_size)
            for (job, clip), clip_codes in zip(clips, codes):
                cache.put(job.key, Entry(clip_codes, clip.seconds, clip.warnings))
            encoded_seconds += sum(job.seconds for job in part)
            progress.update(round(encoded_seconds) - progress.n)
        for future in upcoming:  # decoding ahead that a stop leaves unused
            future.cancel()
    return failed


def encode_missing(
    jobs: list[Job], column: AudioColumn, cache: CodesCache, settings: EncodeSettings, devices: list[torch.device]
) -> dict[int, audio.AudioError]:
    """Fill `cache` with the jobs' codes on `devices`; returns the rows whose audio SNAC cannot encode."""
    if not jobs:
        return {}
    if len(devices) == 1 or len(jobs) < len(devices):
        return encode_share(jobs, column, cache, settings, str(devices[0]))
    # Deal length-sorted batches round-robin, so that each device gets as much audio and as long clips.
    shares: list[list[Job]] = [[] for _ in devices]
    for number, part in enumerate(length_chunks(jobs, settings.batch_size, batches=1)):
        shares[number % len(devices)].extend(part)
    # Several CPU workers split the cores between them instead of each using them all.
    threads = max(1, torch.get_num_threads() // len(devices)) if devices[0].type == "cpu" else None
    # spawn: a forked CUDA context is unusable, and a fork would copy this process's memory.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(devices), mp_context=spawn, initializer=_share_stop, initargs=(spawn.Event(),)) as pool:
        results = [
            pool.submit(encode_share, share, column, cache, settings, str(device), position, threads)
            for position, (share, device) in enumerate(zip(shares, devices))
        ]
        failed: dict[int, audio.AudioError] = {}
        for result in results:
            failed.update(result.result())
    return failed

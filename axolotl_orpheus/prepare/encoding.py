"""Encoding the clips the codes cache lacks, as fast as SNAC allows without changing a code.

The clips are sorted by length across the whole dataset, so clips of the same padded length fill exact
batches (SNAC's encoder is non-causal: only equal lengths batch without changing a code). The longest come
first: their activations size the heap that encoding keeps (codec.keep_freed_memory), and every later one
fits in memory they freed, where shortest first grows the heap at each new length. Threads decode and
resample the next chunk while SNAC encodes this one. A clip longer than a row can hold is first probed from
its start, so that one that cannot fit is never decoded or encoded whole. With several devices, each gets
one SNAC replica in a spawned process and an equal share of the work; a bad clip (in raise mode) or a failure
in one process stops them all before their next chunk.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from axolotl_orpheus import audio, codec, layout
from axolotl_orpheus.codec.encoder import clips_per_batch
from axolotl_orpheus.layout import CONTEXT_FRAMES, SAMPLES_PER_FRAME
from axolotl_orpheus.logs import show_info_logs
from axolotl_orpheus.prepare.cache import CodesCache, Entry

BATCHES_PER_CHUNK = 4  # batches' worth of clips decoded at a time: enough equal lengths to fill batches


@dataclass(frozen=True)
class StopFlag:
    """What the processes sharing an encoding (encode_missing with several devices) raise on a bad clip when the run
    is to raise, or on a failure, so that all stop before their next chunk instead of only the one that met it.

    A file: it travels to each process as an argument, where multiprocessing's events reach a spawned process only
    when it starts. `set` and `is_set`, as threading.Event's (which one process alone may use instead).
    """

    path: Path

    def set(self) -> None:
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()


class EncodingError(RuntimeError):
    """Encoding failed for a reason other than a bad clip (out of memory, a full disk, a bug): names the device and
    the clips it was encoding."""


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
    cpu_kernels: bool = True
    stop_at_failure: bool = False  # the run will raise on the first bad clip: encoding on is wasted time
    # The most frames a row can hold once duplicate frames are dropped; a clip whose header shows more is probed first.
    max_kept_frames: int | None = None


def default_batch_size(device: torch.device) -> int | None:
    """Clips per batch unless set: one on CPU, where batching is slower; on a GPU, codec.BATCH_SECONDS of audio."""
    return 1 if device.type == "cpu" else None


def frames(job: Job) -> int:
    """The job's clip in SNAC frames, from its header's length (SNAC pads even the shortest clip to one frame)."""
    return max(1, layout.whole_frames(job.seconds * audio.SAMPLE_RATE))


def length_chunks(jobs: list[Job], batch_size: int | None, batches: int = BATCHES_PER_CHUNK) -> list[list[Job]]:
    """The jobs sorted by padded length, longest first, in chunks of `batches` batches (codec.clips_per_batch)."""
    chunks: list[list[Job]] = []
    filled = 0.0  # batches' worth in the last chunk
    for job in sorted(jobs, key=lambda job: (-frames(job), job.row)):
        if not chunks or filled >= batches - 1e-9:  # the tolerance absorbs float sums such as 12 * (1 / 3)
            chunks.append([])
            filled = 0.0
        chunks[-1].append(job)
        filled += 1 / clips_per_batch(frames(job), batch_size)
    return chunks


def probe_length(model, source: Any, base_dir: str | None, job: Job, max_kept_frames: int) -> audio.AudioError | None:
    """Whether a clip longer than a row can hold fits once its duplicate frames are dropped, learned from its start
    alone: an AudioError (longer_than_sequence_len) when its first frames already keep too many, else None (it
    may fit: encode it whole). Decodes and encodes twice the frames that fit, with context after them so that
    their codes are the whole clip's (CONTEXT_FRAMES, as windows have), whatever the clip's length."""
    probed = 2 * max_kept_frames
    try:
        clip = audio.load_checked_clip(source, base_dir, max_samples=(probed + CONTEXT_FRAMES) * SAMPLES_PER_FRAME)
    except audio.AudioError as exc:
        return exc
    (codes,) = codec.encode(model, [clip.samples])
    n = min(probed, len(codes[0]))  # all of them when the clip ended sooner: then these are the whole clip's codes
    kept = int(layout.duplicate_frame_mask(layout.interleave(codes[0][:n], codes[1][: 2 * n], codes[2][: 4 * n])).sum())
    if kept <= max_kept_frames:
        return None
    return audio.AudioError(
        f"the clip lasts {job.seconds:.1f} s; its first {n} frames keep {kept} without duplicate frames, more than "
        f"the {max_kept_frames} a row of sequence_len holds",
        "longer_than_sequence_len",
        job.seconds,
    )


def needs_probe(job: Job, settings: EncodeSettings) -> bool:
    """Whether the header shows more frames than a row can hold: probe_length decides before it is encoded whole."""
    return settings.max_kept_frames is not None and frames(job) > settings.max_kept_frames


def load_or_error(source: Any, base_dir: str | None) -> audio.Clip | audio.AudioError:
    try:
        return audio.load_checked_clip(source, base_dir)
    except audio.AudioError as exc:
        return exc


def decoding_threads(device: str) -> int:
    """On CPU, torch's threads already use every core; on a GPU, CPU decoding is what keeps it busy."""
    return 1 if torch.device(device).type == "cpu" else min(8, multiprocessing.cpu_count())


def encode_loaded(
    model,
    part: list[Job],
    loaded: list[audio.Clip | audio.AudioError],
    settings: EncodeSettings,
    memory: codec.MemoryLimit,
) -> tuple[list[tuple[Job, Entry]], dict[int, audio.AudioError]]:
    """One chunk's codes from its decoded clips, and the rows whose audio could not be decoded; with
    stop_at_failure, a chunk holding such a row is not encoded (the run will raise). `memory`: the model's."""
    failed = {job.row: clip for job, clip in zip(part, loaded) if isinstance(clip, audio.AudioError)}
    clips = [(job, clip) for job, clip in zip(part, loaded) if job.row not in failed]
    if failed and settings.stop_at_failure:
        return [], failed
    codes = codec.encode(model, [clip.samples for _, clip in clips], settings.batch_size, memory=memory)
    entries = [(job, Entry(clip_codes, clip.seconds, clip.warnings)) for (job, clip), clip_codes in zip(clips, codes)]
    return entries, failed


def encoding_error(device: str, part: list[Job], sources: Callable[[list[int]], list], exc: Exception) -> EncodingError:
    """What failed, for the rows of a chunk: the device, the first rows and their audio."""
    rows = ", ".join(str(job.row) for job in part[:3]) + (f" and {len(part) - 3} more" if len(part) > 3 else "")
    try:
        rows += f" ({', '.join(audio.describe_source(s) for s in sources([job.row for job in part[:3]]))})"
    except Exception:  # noqa: BLE001 - reading the audio column may be what failed
        pass
    return EncodingError(f"SNAC encoding on {device} failed on rows {rows}: {type(exc).__name__}: {exc}")


def encode_share(
    jobs: list[Job],
    column: AudioColumn,
    cache: CodesCache,
    settings: EncodeSettings,
    device: str,
    position: int = 0,
    threads: int | None = None,
    stop: StopFlag | threading.Event | None = None,
) -> dict[int, audio.AudioError]:
    """Encode `jobs` on `device` into the cache; returns the rows whose audio SNAC cannot encode (with
    stop_at_failure, the first chunk's that has any, leaving that chunk and the rest unencoded, and in
    every process sharing the work: `stop`, which this one sets, and whose being set stops it)."""
    stop = stop or threading.Event()
    if threads:
        torch.set_num_threads(threads)
    model = codec.load_snac(settings.snac_model, device, settings.compile, settings.cpu_kernels)
    memory = codec.MemoryLimit()
    decoders = ThreadPoolExecutor(decoding_threads(device))

    def decode(part: list[Job]) -> list[Future]:
        sources = column.sources([job.row for job in part])
        return [decoders.submit(load_or_error, source, column.base_dir) for source in sources]

    def failure(part: list[Job], exc: Exception) -> EncodingError:
        stop.set()
        return encoding_error(device, part, column.sources, exc)

    failed: dict[int, audio.AudioError] = {}
    progress = tqdm(
        total=round(sum(job.seconds for job in jobs)),
        unit="audio-s",
        position=position,
        desc=f"Orpheus: SNAC encoding on {device}",
        disable=not jobs,
    )
    encoded_seconds = 0.0
    with decoders, progress, codec.keep_freed_memory():
        # Clips longer than a row can hold are probed from their start, before any of them is decoded whole.
        limit = settings.max_kept_frames
        for job in [job for job in jobs if needs_probe(job, settings)]:
            if stop.is_set():
                return failed
            try:
                error = probe_length(model, column.sources([job.row])[0], column.base_dir, job, limit)
            except Exception as exc:
                raise failure([job], exc) from exc
            if error:
                failed[job.row] = error
                encoded_seconds += job.seconds
                if settings.stop_at_failure:
                    stop.set()
                    return failed
        chunks = length_chunks([job for job in jobs if job.row not in failed], settings.batch_size)
        upcoming: list[Future] = []
        for index, part in enumerate(chunks):
            if stop.is_set():  # another process met a bad clip or failed: the run will raise
                break
            try:
                loaded = [future.result() for future in (upcoming or decode(part))]
                upcoming = decode(chunks[index + 1]) if index + 1 < len(chunks) else []
                entries, bad = encode_loaded(model, part, loaded, settings, memory)
                failed.update(bad)
                if bad and settings.stop_at_failure:
                    stop.set()
                    break
                for job, entry in entries:
                    cache.put(job.key, entry)
            except Exception as exc:
                raise failure(part, exc) from exc
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
    with (
        tempfile.TemporaryDirectory(prefix="orpheus-encoding-") as folder,
        ProcessPoolExecutor(len(devices), mp_context=spawn, initializer=show_info_logs) as pool,
    ):
        stop = StopFlag(Path(folder) / "stop")
        results = [
            pool.submit(encode_share, share, column, cache, settings, str(device), position, threads, stop)
            for position, (share, device) in enumerate(zip(shares, devices))
        ]
        # A process that fails stops the others too (it sets the event itself, but one that dies cannot).
        done, _ = wait(results, return_when=FIRST_EXCEPTION)
        if any(result.exception() for result in done):
            stop.set()
        failed: dict[int, audio.AudioError] = {}
        for result in results:
            failed.update(result.result())
    return failed

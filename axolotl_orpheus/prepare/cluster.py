"""Encoding on a Ray cluster (`orpheus_encode_cluster: ray`): the clips the codes cache lacks, with Ray Data.

The driver (the process running `axolotl preprocess`) cuts the jobs into the local path's length-sorted chunks
(encoding.length_chunks) and groups them into Ray blocks. An actor on the driver's node reads each block's
audio from the dataset, so that the driver never holds it (hub and parquet datasets carry their bytes; a path
dataset's files must be on every node). One SNAC actor per GPU, or per CPU node with all its cores as the local
path's one process has, decodes and encodes each chunk with the local path's code (encoding.encode_loaded), so
every code is the local path's. The codes (about 170 bytes per audio second) stream back to the driver, which
writes each to the codes cache as it arrives: an interrupted run resumes from the cache. Ray restarts an actor
lost with its worker or node and runs its blocks again (Ray Data's defaults: max_restarts and max_task_retries
-1); each restarted actor that encodes is counted.

Ray is imported only here, and only when the option is set.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from itertools import repeat
from threading import Lock
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from axolotl_orpheus import audio, codec
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.logs import show_info_logs
from axolotl_orpheus.prepare import encoding
from axolotl_orpheus.prepare.cache import CodesCache, Entry, pack_codes, unpack_codes
from axolotl_orpheus.prepare.encoding import AudioColumn, EncodeSettings, Job

LOG = logging.getLogger(__name__)

INSTALL = "pip install 'axolotl-orpheus[ray]'"
CONNECT_SECONDS = 20.0  # how long a cluster address may take to answer before the run stops
BLOCKS_IN_FLIGHT = 2  # per SNAC actor: one decodes while the other encodes, as the local path's threads do
# Audio per Ray block at least: the driver's work per block is the same whatever it holds, so a block holds several
# CPU chunks (4 clips each), enough audio for that work to be small beside encoding it; a GPU chunk (4 batches of
# codec.BATCH_SECONDS) is a block on its own (docs/scale-out.md).
BLOCK_SECONDS = 60.0
# What a SNAC actor returns per clip: its codes, clip seconds and warnings, or why its audio cannot be used.
OUTPUT_COLUMNS = ("row", "codes", "seconds", "warnings", "reason", "message")


def import_ray() -> Any:
    """Ray with Ray Data, or an error naming the extra that installs them."""
    try:
        import ray
        import ray.data  # needs ray[data]'s own dependencies (pyarrow, pandas), which ray alone lacks
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"orpheus_encode_cluster: ray needs Ray Data (`{exc.name}` is not installed): {INSTALL}, or set "
            "orpheus_encode_cluster: local"
        ) from exc
    return ray


def check_settings(device: str | None, devices: list[str] | None) -> None:
    """Refuse, before any row is read, what a Ray run cannot do: Ray missing, or devices only this machine has."""
    import_ray()
    if devices:
        raise ValueError(
            f"orpheus_encode_devices {devices} names this machine's devices; with orpheus_encode_cluster: ray every "
            "GPU of the cluster gets its own SNAC: remove orpheus_encode_devices"
        )
    if device and torch.device(device).type not in ("cpu", "cuda"):
        raise ValueError(f"orpheus_device {device}: a Ray cluster encodes on cuda (its GPUs) or cpu; set one of them")


def check_listening(address: str | None) -> None:
    """Refuse in seconds a cluster address (`address`, else RAY_ADDRESS) whose host and port nothing listens on,
    where Ray itself would retry for minutes. A cluster still starting gets CONNECT_SECONDS to answer."""
    given = address or os.environ.get("RAY_ADDRESS")
    host, _, port = (given or "").removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # none, auto, local: Ray's own lookup, which fails fast
        return
    named = f"orpheus_ray_address {given}" if address else f"RAY_ADDRESS={given}"
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS / 4):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise UserError(
                    f"nothing answers at the Ray cluster address {named} ({error}). To fix: start the cluster there "
                    "(`ray start --head` on its head node), or set orpheus_ray_address (or RAY_ADDRESS) to its head "
                    "node's host:port"
                ) from None
        time.sleep(1)


@contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Ray in this process: the cluster it already joined, else `address`, else RAY_ADDRESS or the cluster
    `ray start` began on this machine, else one started for this run; left (and a started one stopped) after."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    check_listening(address)
    ray.init(address=address)
    try:
        yield ray
    finally:
        ray.shutdown()


class Placement:
    """Where SNAC runs on the cluster: one actor per GPU, or on CPU one per node with all its cores (the smallest
    node's count, for every actor to have the same threads and so the same codes)."""

    def __init__(self, ray: Any, device: str | None):
        gpus = int(ray.cluster_resources().get("GPU", 0))
        wants_gpu = torch.device(device).type == "cuda" if device else gpus > 0
        if wants_gpu and not gpus:
            raise ValueError(f"orpheus_device {device}: the Ray cluster has no GPUs; set orpheus_device: cpu")
        if wants_gpu:
            self.device, self.actors, self.cpus, self.threads = "cuda", gpus, 1, None
        else:
            cores = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
            self.threads = min(count for count in cores if count > 0)
            self.device, self.cpus = "cpu", self.threads
            self.actors = sum(count // self.threads for count in cores)

    def __str__(self) -> str:
        kind = "GPU" if self.device == "cuda" else f"CPU ({self.threads} threads each)"
        return f"{self.actors} SNAC {kind} actor{'' if self.actors == 1 else 's'}"


class AudioReader:
    """On the driver's node: each block's audio as the dataset holds it (bytes, or a path every node can open)."""

    def __init__(self, column: AudioColumn):
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [block.tolist() for block in batch["rows"]]
        return {
            "rows": rows,
            "seconds": [block.tolist() for block in batch["seconds"]],
            "sizes": [block.tolist() for block in batch["sizes"]],
            "sources": [self.column.sources(block) for block in rows],
        }


def ray_worker() -> tuple[str, bool]:
    """This Ray worker's name for messages (its node and process) and whether Ray restarted its actor."""
    import ray

    context = ray.get_runtime_context()
    with warnings.catch_warnings():  # Ray's own property calls a deprecated one of its own
        warnings.simplefilter("ignore", DeprecationWarning)
        restarted = bool(context.was_current_actor_reconstructed)
    return f"{context.get_node_id()[:12]}:{os.getpid()}", restarted


class SnacEncoder:
    """One SNAC on a Ray worker: a block of chunks in, one row per clip out (its codes, or why its audio cannot be
    used)."""

    def __init__(self, settings: EncodeSettings, device: str, base_dir: str | None, threads: int | None):
        show_info_logs()  # which SNAC path runs, in the worker's output that Ray forwards
        if threads:
            torch.set_num_threads(threads)
        self.settings, self.device, self.base_dir = settings, device, base_dir
        self.model = codec.load_snac(settings.snac_model, device, settings.compile, settings.cpu_kernels)
        self.memory = codec.MemoryLimit()
        self.decoders = ThreadPoolExecutor(encoding.decoding_threads(device))
        self.encoding = Lock()  # blocks decode side by side; SNAC encodes one chunk at a time
        # Held for the actor's life, as the local path holds it while it encodes: the worker only encodes.
        self.held = ExitStack()
        self.held.enter_context(codec.keep_freed_memory())
        self.worker, self.restarted = ray_worker()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        (rows,), (seconds,), (sizes,), (sources,) = batch["rows"], batch["seconds"], batch["sizes"], batch["sources"]
        jobs = [Job(int(row), "", float(length)) for row, length in zip(rows, seconds)]  # the keys are the driver's
        source_of = dict(zip((job.row for job in jobs), sources))
        clips = []  # one per clip: OUTPUT_COLUMNS
        for size, end in zip(sizes, np.cumsum(sizes)):
            entries, failed = self.encode_chunk(jobs[end - size : end], source_of)
            clips += [
                (job.row, pack_codes(entry.codes), entry.seconds, ",".join(entry.warnings), "", "")
                for job, entry in entries
            ]
            clips += [(row, b"", error.seconds, "", error.reason, str(error)) for row, error in failed.items()]
            if failed and self.settings.stop_at_failure:  # the run will raise: the rest is wasted time
                break
        columns = dict(zip(OUTPUT_COLUMNS, map(list, zip(*clips))))  # every chunk gives at least one clip
        return {**columns, "worker": [self.worker] * len(clips), "restarted": [self.restarted] * len(clips)}

    def encode_chunk(
        self, part: list[Job], source_of: dict[int, Any]
    ) -> tuple[list[tuple[Job, Entry]], dict[int, audio.AudioError]]:
        """The local path's steps for one chunk: probe its clips longer than a row holds, decode, encode."""
        try:
            with self.encoding:  # a probe encodes a clip's start
                probed = {
                    job.row: encoding.probe_length(
                        self.model, source_of[job.row], self.base_dir, job, self.settings.max_kept_frames
                    )
                    for job in part
                    if encoding.needs_probe(job, self.settings)
                }
            decoding = [job for job in part if probed.get(job.row) is None]
            clips = self.decoders.map(
                encoding.load_or_error, [source_of[job.row] for job in decoding], repeat(self.base_dir)
            )
            decoded = dict(zip((job.row for job in decoding), clips))
            with self.encoding:
                return encoding.encode_loaded(
                    self.model,
                    part,
                    [probed.get(job.row) or decoded[job.row] for job in part],
                    self.settings,
                    self.memory,
                )
        except Exception as exc:
            sources = lambda rows: [source_of[row] for row in rows]  # noqa: E731
            raise encoding.encoding_error(f"{self.device} of Ray worker {self.worker}", part, sources, exc) from exc


def blocks(chunks: list[list[Job]]) -> list[list[list[Job]]]:
    """The chunks in order, in Ray blocks of at least BLOCK_SECONDS of audio."""
    grouped: list[list[list[Job]]] = []
    filled = BLOCK_SECONDS
    for part in chunks:
        if filled >= BLOCK_SECONDS:
            grouped.append([])
            filled = 0.0
        grouped[-1].append(part)
        filled += sum(job.seconds for job in part)
    return grouped


def encode_missing(
    jobs: list[Job],
    column: AudioColumn,
    cache: CodesCache,
    settings_for: Callable[[torch.device], EncodeSettings],
    device: str | None,
    address: str | None,
) -> tuple[dict[int, audio.AudioError], int]:
    """Fill `cache` with the jobs' codes on a Ray cluster; returns the rows whose audio SNAC cannot encode and how
    many encoding actors Ray restarted."""
    if not jobs:
        return {}, 0
    with connected(address) as ray:
        from ray.data import ActorPoolStrategy, DataContext

        placement = Placement(ray, device)
        settings = settings_for(torch.device(placement.device))
        grouped = blocks(encoding.length_chunks(jobs, settings.batch_size))
        LOG.info(
            f"Orpheus: {len(grouped)} blocks of length-sorted chunks for {placement} on the Ray cluster at "
            f"{ray.get_runtime_context().gcs_address}"
        )
        context = DataContext.get_current()
        shown = context.enable_progress_bars
        context.enable_progress_bars = False  # the one bar is ours, over the whole cluster's audio-seconds
        try:
            described = [
                {
                    "rows": [job.row for part in block for job in part],
                    "seconds": [job.seconds for part in block for job in part],
                    "sizes": [len(part) for part in block],
                }
                for block in grouped
            ]
            dataset = (
                ray.data.from_items(described, override_num_blocks=len(described))
                .map_batches(
                    AudioReader,
                    fn_constructor_args=(column,),
                    batch_size=1,
                    num_cpus=0,
                    compute=ActorPoolStrategy(size=1),
                    label_selector={"ray.io/node-id": ray.get_runtime_context().get_node_id()},
                )
                .map_batches(
                    SnacEncoder,
                    fn_constructor_args=(settings, placement.device, column.base_dir, placement.threads),
                    batch_size=1,
                    num_cpus=placement.cpus,
                    num_gpus=1 if placement.device == "cuda" else 0,
                    compute=ActorPoolStrategy(
                        min_size=1,
                        max_size=placement.actors,
                        initial_size=placement.actors,
                        max_concurrent_calls_per_actor=BLOCKS_IN_FLIGHT,
                        enable_true_multi_threading=True,
                    ),
                )
            )
            return collect(dataset, jobs, cache, settings)
        finally:
            context.enable_progress_bars = shown


def collect(
    dataset: Any, jobs: list[Job], cache: CodesCache, settings: EncodeSettings
) -> tuple[dict[int, audio.AudioError], int]:
    """The encoded clips into the cache as they arrive; with stop_at_failure, stop at the first bad clip."""
    job_of = {job.row: job for job in jobs}
    failed: dict[int, audio.AudioError] = {}
    done: set[int] = set()  # a block run again after a restart may come back twice
    restarted: set[str] = set()
    encoded_seconds = 0.0
    progress = tqdm(
        total=round(sum(job.seconds for job in jobs)), unit="audio-s", desc="Orpheus: SNAC encoding on the Ray cluster"
    )
    # closing: stopping early ends the cluster's work too
    with progress, closing(iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))) as batches:
        for batch in batches:
            for row, codes, seconds, clip_warnings, reason, message, worker, again in zip(
                batch["row"],
                batch["codes"],
                batch["seconds"],
                batch["warnings"],
                batch["reason"],
                batch["message"],
                batch["worker"],
                batch["restarted"],
            ):
                if again:
                    restarted.add(str(worker))
                job = job_of[int(row)]
                if job.row in done:
                    continue
                done.add(job.row)
                if reason:
                    failed[job.row] = audio.AudioError(str(message), str(reason), float(seconds))
                else:
                    cache.put(
                        job.key,
                        Entry(
                            unpack_codes(codes),
                            float(seconds),
                            tuple(str(clip_warnings).split(",")) if clip_warnings else (),
                        ),
                    )
                encoded_seconds += job.seconds
                progress.update(round(encoded_seconds) - progress.n)
            if failed and settings.stop_at_failure:
                return failed, len(restarted)
    if len(done) < len(jobs):
        raise encoding.EncodingError(f"the Ray cluster returned {len(done)} of the {len(jobs)} clips to encode")
    if restarted:
        LOG.warning(
            f"Orpheus: Ray restarted {len(restarted)} SNAC actors (lost workers or nodes); their blocks were "
            "encoded again"
        )
    return failed, len(restarted)

"""Planning the encoding pass: clips sorted by padded length, decoded and encoded in chunks of batches."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile
import torch

from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.codec import encoder
from axolotl_orpheus.prepare import encoding
from axolotl_orpheus.prepare.cache import CodesCache
from axolotl_orpheus.prepare.encoding import BATCHES_PER_CHUNK, AudioColumn, EncodeSettings, Job, length_chunks
from helpers import CLIPS_DIR


def jobs_of(seconds: list[float]) -> list[Job]:
    return [Job(row, f"key{row}", length) for row, length in enumerate(seconds)]


def test_chunks_are_length_sorted_batches_of_clips_or_of_audio():
    """A set batch size chunks by clip count; the default by audio, so a chunk of short clips holds many
    and a chunk of long ones few. Every job lands in exactly one chunk, longest first."""
    jobs = jobs_of([3.0, 1.0, 2.0] * 9)
    chunks = length_chunks(jobs, 3)
    assert [len(chunk) for chunk in chunks] == [3 * BATCHES_PER_CHUNK, 3 * BATCHES_PER_CHUNK, 27 - 24]
    ordered = [job for chunk in chunks for job in chunk]
    assert sorted(ordered) == sorted(jobs) and [job.seconds for job in ordered] == sorted(
        (job.seconds for job in jobs), reverse=True
    )

    short, long = [2.5] * 1000, [55.0] * 30  # 20 long clips, 10 long and 250 short, then 500 and 250 short
    chunks = length_chunks(jobs_of(short + long), None)
    per_short_batch, per_long_batch = encoder.clips_per_batch(30, None), encoder.clips_per_batch(645, None)
    assert (per_short_batch, per_long_batch) == (125, 5)
    assert [len(chunk) for chunk in chunks] == [4 * per_long_batch, 10 + 2 * per_short_batch, 4 * per_short_batch, 250]
    assert length_chunks([], None) == []
    # Dealt to several devices a batch at a time, so that a small dataset is shared out evenly.
    assert [len(chunk) for chunk in length_chunks(jobs_of(short), None, batches=1)] == [per_short_batch] * 8


def share_of(folder, names: list[str]) -> tuple[list[Job], AudioColumn]:
    from datasets import Dataset

    seconds = [soundfile.info(str(folder / name)).duration for name in names]
    jobs = [Job(row, f"key{row}", length) for row, length in enumerate(seconds)]
    return jobs, AudioColumn(Dataset.from_dict({"audio": names}), "audio", str(folder))


def good_clips_and_a_bad_one(folder) -> list[str]:
    """The bundled clips, and bad.wav: 3 s of NaN samples, longer than any of them; the good ones' names."""
    goods = sorted(path.name for path in CLIPS_DIR.glob("*.wav"))
    for name in goods:
        (folder / name).write_bytes((CLIPS_DIR / name).read_bytes())
    soundfile.write(folder / "bad.wav", np.full(3 * SAMPLE_RATE, np.nan, np.float32), SAMPLE_RATE, subtype="FLOAT")
    return goods


def test_a_bad_clip_in_one_process_stops_every_process_sharing_the_work(tmp_path, standins):
    """In raise mode the process that meets a clip found bad when decoded sets the shared stop flag, and a
    process that sees it set encodes nothing more (each half checked in this process, with a threading.Event
    for the spawned processes' StopFlag)."""
    goods = good_clips_and_a_bad_one(tmp_path)
    settings = EncodeSettings(str(standins["snac"]), batch_size=1, compile=False, stop_at_failure=True)
    cache = CodesCache(tmp_path / "codes", "digest")
    stop = threading.Event()

    failed = encoding.encode_share(*share_of(tmp_path, ["bad.wav", *goods]), cache, settings, "cpu", stop=stop)
    assert list(failed) == [0] and stop.is_set() and list(cache.folder.rglob("*.codes")) == []

    assert encoding.encode_share(*share_of(tmp_path, goods), cache, settings, "cpu", stop=stop) == {}
    assert list(cache.folder.rglob("*.codes")) == []  # the other process's bad clip stopped this one too
    stop.clear()
    assert encoding.encode_share(*share_of(tmp_path, goods), cache, settings, "cpu", stop=stop) == {}
    assert len(list(cache.folder.rglob("*.codes"))) == len(goods)


def long_good_clips(folder, count: int) -> list[str]:
    """`count` clips of about 15 s: the bundled clips end to end, so that a chunk of them takes seconds to encode."""
    speech = np.concatenate([soundfile.read(str(path), dtype="float32")[0] for path in sorted(CLIPS_DIR.glob("*.wav"))])
    names = [f"long-{number:02d}.wav" for number in range(count)]
    for name in names:
        soundfile.write(folder / name, speech, 22050)
    return names


def test_a_bad_clip_stops_the_other_encoding_process_before_its_next_chunk(tmp_path, standins):
    """Two spawned CPU processes share a bad clip and 10 good ones of 15 s, dealt a clip at a time, longest first.
    The bad clip (20 s of NaN) is the longest, so the first process meets it in its first chunk and encodes
    nothing; the second, with two chunks ahead of it (4 clips, seconds of encoding, then 1), stops before its
    second: it writes one chunk's codes at most, where without the shared stop it writes all 5."""
    soundfile.write(tmp_path / "bad.wav", np.full(20 * SAMPLE_RATE, np.nan, np.float32), SAMPLE_RATE, subtype="FLOAT")
    jobs, column = share_of(tmp_path, ["bad.wav", *long_good_clips(tmp_path, 10)])
    settings = EncodeSettings(str(standins["snac"]), batch_size=1, compile=False, stop_at_failure=True)
    cache = CodesCache(tmp_path / "codes", "digest")

    failed = encoding.encode_missing(jobs, column, cache, settings, [torch.device("cpu")] * 2)
    assert list(failed) == [0] and failed[0].reason == "non_finite_samples"
    assert len(list(cache.folder.rglob("*.codes"))) <= BATCHES_PER_CHUNK


def block_cache_folder(cache: CodesCache, key: str) -> None:
    """A file where the folder of `key`'s entry goes: writing that entry fails with an OSError (a stand-in for
    a full or failing disk)."""
    cache.path(key).parent.parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).parent.write_text("not a folder")


def test_a_failure_names_the_device_and_clips(tmp_path, standins):
    goods = good_clips_and_a_bad_one(tmp_path)
    jobs, column = share_of(tmp_path, goods)
    settings = EncodeSettings(str(standins["snac"]), batch_size=1, compile=False)
    cache = CodesCache(tmp_path / "codes", "digest")
    jobs = [job._replace(key=f"{'zz' if job.row == 1 else 'ab'}{job.row:038d}") for job in jobs]
    block_cache_folder(cache, jobs[1].key)
    with pytest.raises(
        encoding.EncodingError, match=r"SNAC encoding on cpu failed on rows .*\b1\b.*clip_02.wav.*Error"
    ):
        encoding.encode_share(jobs, column, cache, settings, "cpu")


@dataclass
class FailingColumn(AudioColumn):
    """An audio column whose storage fails for one row (at module level: it travels to spawned processes)."""

    failing_row: int = -1

    def sources(self, rows: list[int]) -> list:
        if self.failing_row in rows:
            raise OSError(f"injected: the disk holding row {self.failing_row}'s audio failed")
        return super().sources(rows)


def test_a_failing_process_stops_the_others_before_their_next_chunk(tmp_path, standins):
    """Not a bad clip but a failure: reading the first process's first chunk of audio fails. The run raises it,
    naming the device and rows, and the other process, with two chunks of 15 s clips (4, then 1), stops before
    its second: without the stop it writes all 5."""
    jobs, column = share_of(tmp_path, long_good_clips(tmp_path, 10))
    first = max(jobs, key=lambda job: (job.seconds, -job.row))  # dealt first, to the first process
    failing = FailingColumn(column.dataset, column.column, column.base_dir, failing_row=first.row)
    settings = EncodeSettings(str(standins["snac"]), batch_size=1, compile=False)
    cache = CodesCache(tmp_path / "codes", "digest")

    with pytest.raises(
        encoding.EncodingError, match=rf"SNAC encoding on cpu failed on rows {first.row}\b.*OSError: injected"
    ):
        encoding.encode_missing(jobs, failing, cache, settings, [torch.device("cpu")] * 2)
    assert len(list(cache.folder.rglob("*.codes"))) <= BATCHES_PER_CHUNK  # the second process's first chunk at most


def test_a_clip_whose_header_says_zero_frames_is_planned_as_one_frame():
    """SNAC pads every clip to a whole frame; a zero-length header must not divide by zero under the GPU
    batching rule (no batch size), whichever pass then rejects the clip."""
    chunks = length_chunks(jobs_of([0.0, 2.0]), None)
    assert [[job.row for job in chunk] for chunk in chunks] == [[1, 0]]

"""Planning the encoding pass: clips sorted by padded length, decoded and encoded in chunks of batches."""

from __future__ import annotations

import threading

import numpy as np
import soundfile
import torch

from axolotl_orpheus import codec, encoding
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.cache import CodesCache
from axolotl_orpheus.encoding import BATCHES_PER_CHUNK, AudioColumn, EncodeSettings, Job, length_chunks
from conftest import CLIPS_DIR


def jobs_of(seconds: list[float]) -> list[Job]:
    return [Job(row, f"key{row}", length) for row, length in enumerate(seconds)]


def test_chunks_are_length_sorted_batches_of_clips_or_of_audio():
    """A set batch size chunks by clip count; the default by audio, so a chunk of short clips holds many
    and a chunk of long ones few. Every job lands in exactly one chunk, longest first."""
    jobs = jobs_of([3.0, 1.0, 2.0] * 9)
    chunks = length_chunks(jobs, 3)
    assert [len(chunk) for chunk in chunks] == [3 * BATCHES_PER_CHUNK, 3 * BATCHES_PER_CHUNK, 27 - 24]
    ordered = [job for chunk in chunks for job in chunk]
    assert sorted(ordered) == sorted(jobs) and [job.seconds for job in ordered] == sorted((job.seconds for job in jobs), reverse=True)

    short, long = [2.5] * 1000, [55.0] * 30  # 20 long clips, 10 long and 250 short, then 500 and 250 short
    chunks = length_chunks(jobs_of(short + long), None)
    per_short_batch, per_long_batch = codec.clips_per_batch(30, None), codec.clips_per_batch(645, None)
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


def test_a_bad_clip_in_one_process_stops_every_process_sharing_the_work(monkeypatch, tmp_path, standins):
    """In raise mode the process that meets a clip found bad when decoded sets the shared stop event, and a
    process that sees it set encodes nothing more (each half checked in this process, with a threading.Event
    for the spawned processes' one)."""
    goods = good_clips_and_a_bad_one(tmp_path)
    settings = EncodeSettings(str(standins["snac"]), batch_size=1, compile=False, stop_at_failure=True)
    cache = CodesCache(tmp_path / "codes", "digest")
    stop = threading.Event()
    monkeypatch.setattr(encoding, "_stop", stop)

    failed = encoding.encode_share(*share_of(tmp_path, ["bad.wav", *goods]), cache, settings, "cpu")
    assert list(failed) == [0] and stop.is_set() and list(cache.folder.rglob("*.codes")) == []

    assert encoding.encode_share(*share_of(tmp_path, goods), cache, settings, "cpu") == {}
    assert list(cache.folder.rglob("*.codes")) == []  # the other process's bad clip stopped this one too
    stop.clear()
    assert encoding.encode_share(*share_of(tmp_path, goods), cache, settings, "cpu") == {}
    assert len(list(cache.folder.rglob("*.codes"))) == len(goods)


def test_a_bad_clip_stops_the_other_encoding_process_too(tmp_path, standins):
    """Two spawned CPU processes share 121 clips, dealt a clip at a time, longest first. The bad clip is the
    longest, so the first process meets it in its first chunk and encodes nothing; the second, with about
    15 s of encoding ahead of it, stops before its next chunk (without the shared stop it encodes all 60)."""
    goods = good_clips_and_a_bad_one(tmp_path)
    jobs, column = share_of(tmp_path, ["bad.wav", *goods * 20])
    settings = EncodeSettings(str(standins["snac"]), batch_size=1, compile=False, stop_at_failure=True)
    cache = CodesCache(tmp_path / "codes", "digest")

    failed = encoding.encode_missing(jobs, column, cache, settings, [torch.device("cpu")] * 2)
    assert list(failed) == [0] and failed[0].reason == "non_finite_samples"
    assert len(list(cache.folder.rglob("*.codes"))) < 60  # the second process's share

"""Planning the encoding pass: clips sorted by padded length, decoded and encoded in chunks of batches."""

from __future__ import annotations

from axolotl_orpheus import codec
from axolotl_orpheus.encoding import BATCHES_PER_CHUNK, Job, length_chunks


def jobs_of(seconds: list[float]) -> list[Job]:
    return [Job(row, f"key{row}", length) for row, length in enumerate(seconds)]


def test_chunks_are_length_sorted_batches_of_clips_or_of_audio():
    """A set batch size chunks by clip count; the default by audio, so a chunk of short clips holds many
    and a chunk of long ones few. Every job lands in exactly one chunk, shortest first."""
    jobs = jobs_of([3.0, 1.0, 2.0] * 9)
    chunks = length_chunks(jobs, 3)
    assert [len(chunk) for chunk in chunks] == [3 * BATCHES_PER_CHUNK, 3 * BATCHES_PER_CHUNK, 27 - 24]
    ordered = [job for chunk in chunks for job in chunk]
    assert sorted(ordered) == sorted(jobs) and [job.seconds for job in ordered] == sorted(job.seconds for job in jobs)

    short, long = [2.5] * 1000, [55.0] * 30  # 2 chunks of 500 short clips, then 20 and 10 long ones
    chunks = length_chunks(jobs_of(short + long), None)
    per_short_batch, per_long_batch = codec.clips_per_batch(30, None), codec.clips_per_batch(645, None)
    assert (per_short_batch, per_long_batch) == (125, 5)
    assert [len(chunk) for chunk in chunks] == [BATCHES_PER_CHUNK * per_short_batch] * 2 + [BATCHES_PER_CHUNK * per_long_batch, 10]
    assert length_chunks([], None) == []
    # Dealt to several devices a batch at a time, so that a small dataset is shared out evenly.
    assert [len(chunk) for chunk in length_chunks(jobs_of(short), None, batches=1)] == [per_short_batch] * 8

"""The streaming SNAC decoder: chunks decoded with context equal one whole decode, with noise off or drawn per
position, and the decoder walk is SNAC's own decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axolotl_orpheus import codec, layout
from axolotl_orpheus.codec.streaming import (
    CONTEXT_FRAMES,
    MAX_CHUNK_FRAMES,
    PositionalNoise,
    StreamingDecoder,
    decode_frames,
)

# Chunks are decoded from other lengths than the whole, so oneDNN may sum in another order: a rounding's worth,
# far below one step of 16-bit audio (3e-5).
TOLERANCE = 1e-5


def random_frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, layout.CODEBOOK_SIZE, (count, 7)) + layout.FRAME_OFFSETS


def stream(decoder: StreamingDecoder, frames: np.ndarray, sizes) -> list[np.ndarray]:
    """The chunks `decoder` returns for `frames` pushed `sizes` frames at a time (cycled), then its end."""
    chunks, start, i = [], 0, 0
    while start < len(frames):
        step = sizes[i % len(sizes)]
        chunks += decoder.push(frames[start : start + step])
        start, i = start + step, i + 1
    return [*chunks, decoder.finish()]


@pytest.mark.parametrize(
    "noise, sizes",
    [(None, [1]), (PositionalNoise(11), [1]), (None, [3, 1, 5])],
    ids=["noise off", "positional noise", "uneven pushes"],
)
def test_streamed_audio_equals_one_whole_decode_at_every_chunk_boundary(snac_model, noise, sizes):
    frames = random_frames(24)
    whole = decode_frames(snac_model, frames, noise)
    decoder = StreamingDecoder(snac_model, noise)
    chunks = stream(decoder, frames, sizes)
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.shape == (24 * layout.SAMPLES_PER_FRAME,)
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=TOLERANCE)
    boundaries = np.cumsum([len(chunk) for chunk in chunks])[:-1]
    assert len(boundaries) >= 4
    for boundary in boundaries:  # the samples either side of each seam, where a click would be
        around = slice(boundary - 64, boundary + 64)
        np.testing.assert_allclose(streamed[around], whole[around], rtol=0, atol=TOLERANCE)


def test_chunks_start_at_one_frame_then_double(snac_model):
    """First audio once CONTEXT_FRAMES frames follow the first one (canopy's decoder needs 4 frames too); then
    chunks double up to a largest size (MAX_CHUNK_FRAMES by default), so the context decoded twice stays a small
    share."""
    assert StreamingDecoder(snac_model).max_chunk == MAX_CHUNK_FRAMES
    decoder = StreamingDecoder(snac_model, max_chunk=8)
    frames = random_frames(40)
    sizes = []
    for count in range(len(frames)):
        chunks = decoder.push(frames[count : count + 1])
        if not sizes:
            assert bool(chunks) == (count + 1 == 1 + CONTEXT_FRAMES)
        sizes += [len(chunk) // layout.SAMPLES_PER_FRAME for chunk in chunks]
    sizes.append(len(decoder.finish()) // layout.SAMPLES_PER_FRAME)
    assert sizes == [1, 2, 4, 8, 8, 8, 9] and decoder.decodes == len(sizes)


def test_a_code_reaches_no_further_than_the_context(snac_model):
    """Why CONTEXT_FRAMES suffices: changing frame k changes the whole decode only within that many frames of it."""
    frames = random_frames(20)
    changed = frames.copy()
    changed[10] = random_frames(1, seed=1)[0]
    difference = np.abs(decode_frames(snac_model, frames) - decode_frames(snac_model, changed))
    reached = np.flatnonzero(difference > 0) / layout.SAMPLES_PER_FRAME
    assert 10 - CONTEXT_FRAMES < reached.min() and reached.max() < 11 + CONTEXT_FRAMES
    assert reached.min() < 10 - CONTEXT_FRAMES + 1 and reached.max() > 10 + CONTEXT_FRAMES  # and it needs that many


def test_the_decoder_walk_is_snacs_own_decode(snac_model):
    """With each noise block drawing torch.randn in SNAC's order, the walk gives codec.decode's samples exactly."""
    frames = random_frames(12)

    def snacs_noise(layer: int, start: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn((like.shape[0], 1, like.shape[-1]), device=like.device, dtype=like.dtype)

    torch.manual_seed(5)
    walked = decode_frames(snac_model, frames, snacs_noise)
    np.testing.assert_array_equal(walked, codec.decode(snac_model, layout.deinterleave(frames), seed=5))


def test_positional_noise_is_the_same_wherever_a_span_starts():
    noise = PositionalNoise(3)
    like = torch.zeros(1, 4, 10_000)
    whole = noise(2, 4090, like)[0, 0]
    np.testing.assert_array_equal(noise(2, 5000, like[..., :3000])[0, 0], whole[910:3910])
    assert not torch.equal(noise(1, 4090, like), noise(2, 4090, like))  # each layer its own noise
    assert not torch.equal(PositionalNoise(4)(2, 4090, like), noise(2, 4090, like))
    assert abs(float(whole.std()) - 1) < 0.05  # standard normal, as SNAC's torch.randn

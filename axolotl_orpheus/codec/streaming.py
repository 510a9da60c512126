"""Decoding frames as they arrive: chunks decoded with enough context on both sides to equal one whole decode.

SNAC's decoder is convolutional and non-causal: each sample depends on the codes within a few frames of it (its
receptive field). A chunk of frames decoded together with CONTEXT_FRAMES more on each side, of which only
the chunk's own samples are kept, therefore gives the samples one decode of the whole stream gives: there are no
seams to cross-fade. Chunks start at one frame, for fast first audio, and double up to MAX_CHUNK_FRAMES, so the
context decoded twice stays a small share of the work.

SNAC's noise blocks draw fresh `torch.randn` noise on every call, which no two chunkings could share. Here the
noise is drawn per position instead (`PositionalNoise`): position p of noise layer l gets the same value in
every chunk that covers it, so chunks equal a whole decode with noise on too; or it is left out (`noise=None`).
"""

from __future__ import annotations

import numpy as np
import torch
from snac import SNAC
from snac.layers import DecoderBlock, NoiseBlock

from axolotl_orpheus.devices import exact_fp32
from axolotl_orpheus.layout import SAMPLES_PER_FRAME, deinterleave

# Context on each side of a chunk: the fewest whole frames beyond the reach of SNAC 24 kHz's decoder (its receptive
# field; tests/test_codec_streaming.py checks both).
CONTEXT_FRAMES = 3
FIRST_CHUNK_FRAMES = 1
MAX_CHUNK_FRAMES = 32
# Positional noise is drawn this many positions at a time, each block from its own seed.
NOISE_BLOCK = 4096
LATENT_STEPS_PER_FRAME = 4  # SNAC's finest level: 4 codes a frame, one latent step each


class PositionalNoise:
    """SNAC's decoder noise as a function of position: the same seed gives the same value at the same place.

    Layer l's noise at position p is draw p % NOISE_BLOCK of a standard normal block seeded from
    (seed, l, p // NOISE_BLOCK), so any span can be drawn alone and agrees with any other span covering it.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _block(self, layer: int, index: int) -> torch.Tensor:
        (state,) = np.random.SeedSequence([self.seed, layer, index]).generate_state(1, np.uint64)
        return torch.randn(NOISE_BLOCK, generator=torch.Generator().manual_seed(int(state)))

    def __call__(self, layer: int, start: int, like: torch.Tensor) -> torch.Tensor:
        """Noise for positions start .. start + T of `like` (B, C, T), shaped (1, 1, T) on its device."""
        end = start + like.shape[-1]
        first, last = start // NOISE_BLOCK, (end - 1) // NOISE_BLOCK
        drawn = torch.cat([self._block(layer, index) for index in range(first, last + 1)])
        span = drawn[start - first * NOISE_BLOCK : end - first * NOISE_BLOCK]
        return span.to(device=like.device, dtype=like.dtype)[None, None]


def _decode_span(model: SNAC, frames: np.ndarray, first_frame: int, noise: PositionalNoise | None) -> torch.Tensor:
    """The audio of `frames` (n, 7) decoded alone, as if they were frames first_frame.. of a longer stream.

    SNAC's own decode, layer by layer, with each noise block's draw taken from `noise` at its absolute
    position (or left out), instead of from torch's random state.
    """
    device = next(model.parameters()).device
    levels = [torch.as_tensor(level, dtype=torch.long, device=device)[None] for level in deinterleave(frames)]
    x = model.quantizer.from_codes(levels)
    start, noise_layer = first_frame * LATENT_STEPS_PER_FRAME, 0
    for module in model.decoder.model:
        if not isinstance(module, DecoderBlock):
            x = module(x)
            continue
        for layer in module.block:
            if isinstance(layer, torch.nn.ConvTranspose1d):
                start *= layer.stride[0]
            if not isinstance(layer, NoiseBlock):
                x = layer(x)
            elif noise is not None:  # NoiseBlock.forward's operations, with the drawn noise
                x = x + noise(noise_layer, start, x) * layer.linear(x)
            noise_layer += isinstance(layer, NoiseBlock)
    return x[0, 0]


@torch.inference_mode()
@exact_fp32()
def decode_frames(
    model: SNAC, frames: np.ndarray, noise: PositionalNoise | None = None, first_frame: int = 0
) -> np.ndarray:
    """24 kHz float32 audio of frames (n, 7) in one decode: what `StreamingDecoder` streams, at once."""
    return _decode_span(model, np.asarray(frames), first_frame, noise).float().cpu().numpy()


class StreamingDecoder:
    """Audio from a stream of frames, chunk by chunk, equal to `decode_frames` of all of them.

    `push` takes frames as they are generated and returns the chunks they complete; `finish` returns the rest
    once the stream has ended. A chunk of k frames is decoded once CONTEXT_FRAMES more have arrived after it.
    """

    def __init__(
        self,
        model: SNAC,
        noise: PositionalNoise | None = None,
        first_chunk: int = FIRST_CHUNK_FRAMES,
        max_chunk: int = MAX_CHUNK_FRAMES,
        context: int = CONTEXT_FRAMES,
    ) -> None:
        self.model, self.noise, self.context, self.max_chunk = model, noise, context, max_chunk
        self.chunk = first_chunk
        self.frames = np.empty((0, 7), dtype=np.int64)  # from frame `self.offset` on
        self.offset = 0  # the stream index of self.frames[0]
        self.emitted = 0  # frames whose audio has been returned
        self.decodes = 0  # decode calls made, and the frames they decoded, context included, for the benchmark
        self.decoded_frames = 0

    def _decode(self, end: int, right: int) -> np.ndarray:
        """Frames emitted .. end, decoded with up to `context` frames before and `right` after."""
        first = max(self.emitted - self.context, 0)
        span = self.frames[first - self.offset : end + right - self.offset]
        audio = decode_frames(self.model, span, self.noise, first)
        self.decodes += 1
        self.decoded_frames += len(span)
        keep = audio[(self.emitted - first) * SAMPLES_PER_FRAME : (end - first) * SAMPLES_PER_FRAME]
        self.emitted = end
        # Only the left context of the next chunk is needed again.
        drop = max(self.emitted - self.context, 0) - self.offset
        self.frames, self.offset = self.frames[drop:], self.offset + drop
        return keep

    def push(self, frames: np.ndarray) -> list[np.ndarray]:
        self.frames = np.concatenate([self.frames, np.asarray(frames, dtype=np.int64).reshape(-1, 7)])
        chunks = []
        while self.offset + len(self.frames) >= self.emitted + self.chunk + self.context:
            chunks.append(self._decode(self.emitted + self.chunk, self.context))
            self.chunk = min(2 * self.chunk, self.max_chunk)
        return chunks

    def finish(self) -> np.ndarray:
        """The audio of the frames not returned yet: the stream's end is the whole decode's end, so no right
        context is missing."""
        end = self.offset + len(self.frames)
        if end == self.emitted:
            return np.zeros(0, dtype=np.float32)
        return self._decode(end, 0)

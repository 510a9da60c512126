"""Speaking from a checkpoint: the training prompt, frame-constrained sampling, sentence pieces, SNAC audio.

Pure functions on a loaded model, so the `speak` command and a training callback share them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from axolotl_orpheus import layout
from axolotl_orpheus.args import DEFAULT_MAX_NEW_TOKENS, DEFAULT_REPETITION_PENALTY, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.codec.streaming import PositionalNoise, decode_frames
from axolotl_orpheus.listen.sentences import MAX_CHARS, split_sentences

if TYPE_CHECKING:
    pass

LOG = logging.getLogger(__name__)

PAUSE_SECONDS = 0.1


def speech_prompt_ids(tokenizer, text: str, voice: str | None = None) -> list[int]:
    """The ids a training row starts with, up to and including start_of_speech: what the model continues."""
    (text_ids,) = layout.prompt_token_ids(tokenizer, [layout.prompt_text(text, voice)])
    return [*layout.PROMPT_PREFIX.tolist(), *text_ids, *layout.PROMPT_SUFFIX.tolist()]


class FrameConstraint(LogitsProcessor):
    """Only the ids a well-formed frame can hold: codebook k's 4096 codes at generated position j, k = j % 7.

    end_of_speech is allowed only at a frame boundary after at least one frame, so generation always
    ends on whole frames and every code lands in its own codebook (no dropped or shifted codes).
    """

    def __init__(self, prompt_length: int, vocab_size: int, resumed: list[bool] | None = None) -> None:
        self.prompt_length = prompt_length
        # Row k allows codebook k; the extra last row is row 0 plus end_of_speech.
        allowed = torch.zeros(layout.TOKENS_PER_FRAME + 1, vocab_size, dtype=torch.bool)
        for k, offset in enumerate(layout.FRAME_OFFSETS.tolist()):
            allowed[k, offset : offset + layout.CODEBOOK_SIZE] = True
        allowed[-1] = allowed[0]
        allowed[-1, layout.END_OF_SPEECH] = True
        self.allowed = allowed
        # Rows whose prompts already end in whole frames (a generation resumed): they may stop right away.
        self.resumed = torch.tensor(resumed or [], dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - self.prompt_length
        k = generated % layout.TOKENS_PER_FRAME
        row = -1 if k == 0 and generated > 0 else k
        if self.allowed.device != scores.device:
            self.allowed = self.allowed.to(scores.device)
        if generated == 0 and self.resumed.any():
            return scores.masked_fill(~self.allowed[torch.where(self.resumed, -1, 0).to(scores.device)], -float("inf"))
        return scores.masked_fill(~self.allowed[row], -float("inf"))


def _per_row(value: float | Sequence[float], rows: int) -> list[float]:
    return [value] * rows if isinstance(value, (int, float)) else list(value)


class RowRepetitionPenalty(LogitsProcessor):
    """transformers' repetition penalty with a penalty of each row's own, so rows asking for different ones
    can share a batch."""

    def __init__(self, penalties: float | Sequence[float], rows: int) -> None:
        self.processors = [RepetitionPenaltyLogitsProcessor(penalty) for penalty in _per_row(penalties, rows)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.cat([p(input_ids[i : i + 1], scores[i : i + 1]) for i, p in enumerate(self.processors)])


class SeededSampler(LogitsProcessor):
    """Temperature, top-p, then one draw per row from that row's own generator, returned as the only allowed id.

    Generation then runs greedy on these scores, so row i's tokens depend on its seed and its logits alone, not
    on which rows share its batch or on the caller's random state. A seed may be a generator already drawn from
    (a generation resumed), and temperature and top-p may be one per row.
    """

    def __init__(
        self,
        seeds: Sequence[int | torch.Generator],
        device: torch.device,
        temperature: float | Sequence[float],
        top_p: float | Sequence[float],
    ) -> None:
        self.generators = [
            seed if isinstance(seed, torch.Generator) else torch.Generator(device).manual_seed(seed) for seed in seeds
        ]
        self.warpers = [
            (TemperatureLogitsWarper(t), TopPLogitsWarper(p))
            for t, p in zip(_per_row(temperature, len(seeds)), _per_row(top_p, len(seeds)))
        ]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Only the ids the frame constraint left (4096 of 156940) can be drawn: sorting and sampling those alone
        # gives the same draw without sorting the whole vocabulary at every step (docs/evaluation.md).
        (candidates,) = torch.isfinite(scores).any(dim=0).nonzero(as_tuple=True)
        drawn = []
        for i, (warpers, generator) in enumerate(zip(self.warpers, self.generators)):
            allowed = scores[i : i + 1, candidates]
            for warper in warpers:
                allowed = warper(input_ids[i : i + 1], allowed)
            drawn.append(torch.multinomial(allowed.float().softmax(dim=-1)[0], 1, generator=generator))
        chosen = torch.full_like(scores, -float("inf"))
        return chosen.scatter_(1, candidates[torch.cat(drawn)][:, None], 0.0)


class Spoken(NamedTuple):
    frames: np.ndarray  # (n, 7) audio frames, n >= 1
    stopped: bool  # whether the model said end_of_speech within its token budget


def generate_tokens(
    model,
    prompts: list[list[int]],
    seeds: Sequence[int | torch.Generator],
    max_new_tokens: int,
    temperature: float | Sequence[float],
    top_p: float | Sequence[float],
    repetition_penalty: float | Sequence[float],
    resumed: list[bool] | None = None,
    streamer: BaseStreamer | None = None,
    stopping_criteria: list[StoppingCriteria] | None = None,
) -> torch.Tensor:
    """The new tokens after each prompt, (rows, up to max_new_tokens rounded down to whole frames): codes, then
    end_of_speech and padding once a row has stopped. Sampling settings are one for all rows or one per row.

    `generate_frames` reads them whole; a server reads them step by step through `streamer` (transformers'
    BaseStreamer: the prompts, then each step's tokens) and stops rows early with `stopping_criteria`.
    """
    whole_frames = max_new_tokens - max_new_tokens % layout.TOKENS_PER_FRAME
    if whole_frames == 0:
        raise ValueError(f"max_new_tokens must allow one frame of 7 tokens; got {max_new_tokens}")
    device = next(model.parameters()).device
    # Padded on the left, so that every prompt ends where generation starts and the frame positions line up.
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[layout.PAD] * (width - len(p)) + list(p) for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            logits_processor=[
                RowRepetitionPenalty(repetition_penalty, len(prompts)),
                FrameConstraint(width, model.get_output_embeddings().weight.shape[0], resumed),
                SeededSampler(seeds, device, temperature, top_p),
            ],
            stopping_criteria=stopping_criteria,
            streamer=streamer,
            max_new_tokens=whole_frames,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            # 1.0 is no penalty, and keeps a penalty from the model's generation_config.json from being applied
            # on top of RowRepetitionPenalty's.
            repetition_penalty=1.0,
            eos_token_id=layout.END_OF_SPEECH,
            pad_token_id=layout.PAD,
        )
    finally:
        model.train(was_training)
    return output[:, width:]


def generate_frames(
    model,
    prompts: list[list[int]],
    seeds: list[int],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
) -> list[Spoken]:
    """What the model speaks after each prompt (ids up to start_of_speech), all prompts in one batch.

    Prompt i is sampled from seeds[i]. The model's train/eval mode is left as it was, so a training callback can
    call this between steps.
    """
    generated = generate_tokens(
        model,
        prompts,
        seeds,
        max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
    )
    spoken = []
    for tokens in generated.cpu().numpy():
        ends = np.flatnonzero(tokens == layout.END_OF_SPEECH)
        tokens = tokens[: ends[0]] if len(ends) else tokens
        frames = layout.speech_frames(np.concatenate([[layout.START_OF_SPEECH], tokens, [layout.END_OF_SPEECH]]))
        spoken.append(Spoken(frames, bool(len(ends))))
    return spoken


def generate_speech(
    model,
    tokenizer,
    text: str,
    voice: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    seed: int = 0,
    **sampling: Any,
) -> np.ndarray:
    """The audio frames (n, 7) the model speaks for `text`, sampled reproducibly from `seed`.

    `sampling` goes to `generate_frames` (temperature, top_p, repetition_penalty).
    """
    (spoken,) = generate_frames(
        model, [speech_prompt_ids(tokenizer, text, voice)], [seed], max_new_tokens=max_new_tokens, **sampling
    )
    if not spoken.stopped:
        LOG.warning(
            "No end_of_speech within %d new tokens: keeping the %d frames generated; the speech may be cut "
            "off (raise max_new_tokens, or split the text into shorter pieces)",
            len(spoken.frames) * layout.TOKENS_PER_FRAME,
            len(spoken.frames),
        )
    return spoken.frames


def speak(
    model,
    tokenizer,
    snac,
    text: str,
    voice: str | None = None,
    max_chars: int = MAX_CHARS,
    seed: int = 0,
    **sampling: Any,
) -> np.ndarray:
    """24 kHz float32 audio of `text`: each sentence piece generated and decoded, joined by short pauses.

    `sampling` goes to `generate_speech` (max_new_tokens, temperature, top_p, repetition_penalty);
    piece i is sampled and decoded with seed + i, so pieces differ yet the whole is reproducible. SNAC's noise is
    drawn per position (codec.streaming), so `serve`'s streamed audio equals this.
    """
    pieces = split_sentences(text, max_chars)
    if not pieces:
        raise ValueError("there is no text to speak")
    clips = []
    for i, piece in enumerate(pieces):
        frames = generate_speech(model, tokenizer, piece, voice, seed=seed + i, **sampling)
        clips.append(decode_frames(snac, frames, PositionalNoise(seed + i)))
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([part for clip in clips for part in (pause, clip)][1:])

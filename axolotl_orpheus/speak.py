"""Speaking from a checkpoint: the training prompt, frame-constrained sampling, sentence pieces, SNAC audio.

Pure functions on a loaded model, so the `speak` command and a training callback share them.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from transformers import LogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

from axolotl_orpheus import codec, layout
from axolotl_orpheus.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LOG = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
# About 1200 new tokens (15 s of audio) fit this much text at a normal speaking rate, in Latin letters.
MAX_CHARS = 200
PAUSE_SECONDS = 0.1
# A Chinese character or a Hangul block is a syllable, a kana a mora: one of them says about as much as three letters
# of English or Spanish, so a CJK character counts as three against max_chars.
_CJK_WEIGHT = 3
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")  # kana, hanzi/kanji, hangul

# Where a piece may end, each cut after the space that follows (CJK punctuation needs none): sentence ends, with
# the quotes or brackets they close (French puts a space before »), then clauses, then commas, then words.
_CLOSERS = "\"'”’)\\]」』）"
_SENTENCE_END = re.compile(rf"[.!?…]+(?:[{_CLOSERS}]| »)* (?!»)|[。！？]+[{_CLOSERS}]* ?")
_CLAUSE_END = re.compile(r"[;:] |[；：] ?")
_COMMA = re.compile(r", |[，、] ?")
_SPACE = re.compile(" ")
# A dot that ends no sentence: after a title, or a single letter (initials as in J. R. R. Tolkien, M. Dupont)...
_TITLE_OR_INITIAL = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Mme|Dr|Prof|Sr|Sra|Jr|St|Mt|vs)|(?<!\w)[^\W\d_])\. $")
# ... and ends that are none when a lowercase word goes on: after "e.g." or "etc.", or a quote ('"Why?" he asked').
_UNLESS_LOWERCASE_FOLLOWS = re.compile(rf"(?:\b(?:e\.g|i\.e|etc|cf|approx)\.|[.!?…](?:[{_CLOSERS}]| »)+) $")


def speech_prompt_ids(tokenizer, text: str, voice: str | None = None) -> list[int]:
    """The ids a training row starts with, up to and including start_of_speech: what the model continues."""
    (text_ids,) = layout.prompt_token_ids(tokenizer, [layout.prompt_text(text, voice)])
    return [*layout.PROMPT_PREFIX.tolist(), *text_ids, *layout.PROMPT_SUFFIX.tolist()]


class FrameConstraint(LogitsProcessor):
    """Only the ids a well-formed frame can hold: codebook k's 4096 codes at generated position j, k = j % 7.

    end_of_speech is allowed only at a frame boundary after at least one frame, so generation always
    ends on whole frames and every code lands in its own codebook (no dropped or shifted codes).
    """

    def __init__(self, prompt_length: int, vocab_size: int) -> None:
        self.prompt_length = prompt_length
        # Row k allows codebook k; the extra last row is row 0 plus end_of_speech.
        allowed = torch.zeros(layout.TOKENS_PER_FRAME + 1, vocab_size, dtype=torch.bool)
        for k, offset in enumerate(layout.FRAME_OFFSETS.tolist()):
            allowed[k, offset : offset + layout.CODEBOOK_SIZE] = True
        allowed[-1] = allowed[0]
        allowed[-1, layout.END_OF_SPEECH] = True
        self.allowed = allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - self.prompt_length
        k = generated % layout.TOKENS_PER_FRAME
        row = -1 if k == 0 and generated > 0 else k
        if self.allowed.device != scores.device:
            self.allowed = self.allowed.to(scores.device)
        return scores.masked_fill(~self.allowed[row], -float("inf"))


class SeededSampler(LogitsProcessor):
    """Temperature, top-p, then one draw per row from that row's own generator, returned as the only allowed id.

    Generation then runs greedy on these scores, so row i's tokens depend on its seed and its logits alone, not
    on which rows share its batch or on the caller's random state.
    """

    def __init__(self, seeds: list[int], device: torch.device, temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Only the ids the frame constraint left (4096 of 156940) can be drawn: sorting and sampling those alone
        # gives the same draw, some 40 times faster.
        (candidates,) = torch.isfinite(scores).any(dim=0).nonzero(as_tuple=True)
        allowed = scores[:, candidates]
        for warper in self.warpers:
            allowed = warper(input_ids, allowed)
        probabilities = allowed.float().softmax(dim=-1)
        drawn = torch.cat([torch.multinomial(row, 1, generator=generator)
                           for row, generator in zip(probabilities, self.generators)])
        chosen = torch.full_like(scores, -float("inf"))
        return chosen.scatter_(1, candidates[drawn][:, None], 0.0)


class Spoken(NamedTuple):
    frames: np.ndarray  # (n, 7) audio frames, n >= 1
    stopped: bool  # whether the model said end_of_speech within its token budget


def generate_frames(
    model,
    prompts: list[list[int]],
    seeds: list[int],
    max_new_tokens: int = 1200,
    temperature: float = 0.6,
    top_p: float = 0.95,
    repetition_penalty: float = 1.1,
) -> list[Spoken]:
    """What the model speaks after each prompt (ids up to start_of_speech), all prompts in one batch.

    Prompt i is sampled from seeds[i]. The model's train/eval mode is left as it was, so a training callback can
    call this between steps.
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
                FrameConstraint(width, model.get_output_embeddings().weight.shape[0]),
                SeededSampler(seeds, device, temperature, top_p),
            ],
            max_new_tokens=whole_frames,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=repetition_penalty,
            eos_token_id=layout.END_OF_SPEECH,
            pad_token_id=layout.PAD,
        )
    finally:
        model.train(was_training)
    spoken = []
    for tokens in output[:, width:].cpu().numpy():
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
    max_new_tokens: int = 1200,
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


def _spoken_length(text: str) -> int:
    """The length max_chars bounds: characters, a CJK one counting as _CJK_WEIGHT."""
    text = text.strip()
    return len(text) + (_CJK_WEIGHT - 1) * len(_CJK.findall(text))


def _cut(pattern: re.Pattern, text: str) -> list[str]:
    """`text` cut after each match of `pattern`. Pieces keep their separators, so that joining neighbours back
    is concatenation, with a space between Latin sentences and none between CJK ones, as in the text."""
    ends = [match.end() for match in pattern.finditer(text)]
    return [text[start:end] for start, end in zip([0, *ends], [*ends, len(text)]) if start < end]


def _sentences(text: str) -> list[str]:
    """`text` cut at sentence ends, except after a title or an initial, or where a lowercase word goes on."""
    sentences: list[str] = []
    for piece in _cut(_SENTENCE_END, text):
        previous = sentences[-1] if sentences else ""
        if _TITLE_OR_INITIAL.search(previous) or (_UNLESS_LOWERCASE_FOLLOWS.search(previous) and piece[0].islower()):
            sentences[-1] += piece
        else:
            sentences.append(piece)
    return sentences


# Tried in turn on a piece still longer than max_chars.
_BREAKS = (
    _sentences,
    functools.partial(_cut, _CLAUSE_END),
    functools.partial(_cut, _COMMA),
    functools.partial(_cut, _SPACE),
)


def _merge(pieces: list[str], max_chars: int) -> list[str]:
    """Join neighbouring pieces while they fit, so a long text is not spoken in tiny fragments."""
    merged: list[str] = []
    for piece in pieces:
        if merged and _spoken_length(merged[-1] + piece) <= max_chars:
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def _split(text: str, max_chars: int, breaks: tuple) -> list[str]:
    if _spoken_length(text) <= max_chars or not breaks:
        return [text]
    pieces = [piece for part in breaks[0](text) for piece in _split(part, max_chars, breaks[1:])]
    return _merge(pieces, max_chars)


def split_sentences(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Pieces of at most `max_chars` (when the text allows), cut at sentence ends, then at clauses.

    Orpheus speaks about 15 s per generation and rambles past the text on long inputs (canopyai/
    Orpheus-TTS #48): long text is spoken piece by piece. Commas and then spaces are last resorts. Chinese and
    Japanese punctuation cuts too, and a CJK character counts for more than a Latin one (it says more).
    """
    text = " ".join(text.split())
    return [piece.strip() for piece in _split(text, max_chars, _BREAKS)] if text else []


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
    piece i is sampled and decoded with seed + i, so pieces differ yet the whole is reproducible.
    """
    pieces = split_sentences(text, max_chars)
    if not pieces:
        raise ValueError("there is no text to speak")
    clips = []
    for i, piece in enumerate(pieces):
        frames = generate_speech(model, tokenizer, piece, voice, seed=seed + i, **sampling)
        clips.append(codec.decode(snac, layout.deinterleave(frames), seed=seed + i))
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([part for clip in clips for part in (pause, clip)][1:])


def load_speaker_model(name_or_path: str, device: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) in eval mode on `device`, from a model folder, a hub id or a LoRA adapter folder.

    An adapter folder (one with adapter_config.json, as axolotl writes for `adapter: lora`) is applied to
    its base_model_name_or_path and merged; its tokenizer is used when it saved one, else the base's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_config = Path(name_or_path) / ADAPTER_CONFIG
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), name_or_path)
        model = model.merge_and_unload()
        has_tokenizer = (Path(name_or_path) / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(name_or_path if has_tokenizer else base)
    else:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    layout.check_tokenizer(tokenizer)
    return model.to(codec.pick_device(device)).eval(), tokenizer

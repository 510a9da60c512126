"""The Orpheus token layout: special ids, SNAC code interleaving, duplicate frames, row framing.

Pure numpy, no model: every function here is the specification of what a training row looks like, as
Orpheus' own tokenizer, training data and decoder have it, so the strategy, the decoder and the tests all
share it.
"""

from __future__ import annotations

import math

import numpy as np

TOKENISER_LENGTH = 128256  # the base Llama-3 vocabulary
START_OF_TEXT = 128000
END_OF_TEXT = 128009
START_OF_SPEECH = TOKENISER_LENGTH + 1
END_OF_SPEECH = TOKENISER_LENGTH + 2
START_OF_HUMAN = TOKENISER_LENGTH + 3
END_OF_HUMAN = TOKENISER_LENGTH + 4
START_OF_AI = TOKENISER_LENGTH + 5
END_OF_AI = TOKENISER_LENGTH + 6
PAD = TOKENISER_LENGTH + 7  # <custom_token_7>
AUDIO_TOKENS_START = TOKENISER_LENGTH + 10

CODEBOOK_SIZE = 4096
TOKENS_PER_FRAME = 7
SAMPLES_PER_FRAME = 2048  # one coarse SNAC frame at 24 kHz
IGNORE_INDEX = -100

# One clip's SNAC codes: its three levels of n, 2n and 4n codes.
Codes = tuple[np.ndarray, np.ndarray, np.ndarray]

# Clips longer than this are encoded in windows: the encoder needs about 21 MB per second of audio, so a
# one-hour clip in one pass would need 75 GB. Each window sees CONTEXT_FRAMES of audio on both sides, far
# beyond the encoder's receptive field (about 190 ms), so its codes equal those of the whole clip.
WINDOW_FRAMES = 704  # 60 s
CONTEXT_FRAMES = 12  # 1 s

# Which SNAC level, and which of that level's codes inside one coarse frame, each of the 7 positions
# carries: position k holds level FRAME_LEVELS[k], code FRAME_SLOTS[k] of the frame's 1, 2 or 4 codes.
FRAME_LEVELS = np.array([0, 1, 2, 2, 1, 2, 2])
FRAME_SLOTS = np.array([0, 0, 0, 1, 1, 2, 3])
# Position k is offset into its own block of 4096 ids, so a token names both its position and code.
FRAME_OFFSETS = AUDIO_TOKENS_START + CODEBOOK_SIZE * np.arange(TOKENS_PER_FRAME)

PROMPT_PREFIX = np.array([START_OF_HUMAN])
PROMPT_SUFFIX = np.array([END_OF_TEXT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH])
SPEECH_SUFFIX = np.array([END_OF_SPEECH, END_OF_AI])


def whole_frames(samples: float) -> int:
    """The SNAC frames a clip of `samples` samples at 24 kHz is encoded as: SNAC pads it to whole frames."""
    return math.ceil(samples / SAMPLES_PER_FRAME)


def interleave(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """SNAC codes of one clip (n, 2n and 4n codes) -> frames of 7 offset tokens, shape (n, 7)."""
    n = len(c0)
    if len(c1) != 2 * n or len(c2) != 4 * n:
        raise ValueError(f"SNAC levels must hold n, 2n, 4n codes; got {len(c0)}, {len(c1)}, {len(c2)}")
    levels = (np.asarray(c0).reshape(n, 1), np.asarray(c1).reshape(n, 2), np.asarray(c2).reshape(n, 4))
    frames = np.empty((n, TOKENS_PER_FRAME), dtype=np.int64)
    for k in range(TOKENS_PER_FRAME):
        frames[:, k] = levels[FRAME_LEVELS[k]][:, FRAME_SLOTS[k]]
    return frames + FRAME_OFFSETS


def deinterleave(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `interleave`: frames of offset tokens (n, 7) -> the three SNAC levels."""
    codes = np.asarray(frames, dtype=np.int64) - FRAME_OFFSETS
    n = len(codes)
    levels = (np.empty((n, 1), np.int64), np.empty((n, 2), np.int64), np.empty((n, 4), np.int64))
    for k in range(TOKENS_PER_FRAME):
        levels[FRAME_LEVELS[k]][:, FRAME_SLOTS[k]] = codes[:, k]
    return levels[0].reshape(-1), levels[1].reshape(-1), levels[2].reshape(-1)


def duplicate_frame_mask(frames: np.ndarray) -> np.ndarray:
    """True for each frame the reference recipe keeps.

    The recipe drops a frame whose first code equals the first code of the last *kept* frame. A dropped
    frame has that same first code, so "last kept" equals "previous": one vectorised comparison suffices.
    """
    keep = np.ones(len(frames), dtype=bool)
    keep[1:] = frames[1:, 0] != frames[:-1, 0]
    return keep


def frame_row(prompt_ids: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Tokenized prompt (with BOS) and audio frames -> the full training row of input ids."""
    return np.concatenate(
        [PROMPT_PREFIX, np.asarray(prompt_ids, np.int64), PROMPT_SUFFIX, frames.reshape(-1), SPEECH_SUFFIX]
    )


def speech_labels(input_ids: np.ndarray, n_prompt_ids: int) -> np.ndarray:
    """Labels that train on speech only: everything up to and including start_of_speech is ignored."""
    labels = input_ids.copy()
    labels[: len(PROMPT_PREFIX) + n_prompt_ids + len(PROMPT_SUFFIX)] = IGNORE_INDEX
    return labels


def prompt_text(text: str, speaker: str | None) -> str:
    """The text the model reads: "{speaker}: {text}" for a multi-speaker row, else the text."""
    return f"{speaker}: {text}" if speaker else text


def prompt_token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Each prompt's ids with BOS, its text always read as text.

    A transcript holding `<|eot_id|>` or `<custom_token_5>` would otherwise become that control or audio id and
    end the prompt early; the emotion tags (`<laugh>`) are plain text in Orpheus' vocabulary either way.
    """
    return tokenizer(prompts, add_special_tokens=True, split_special_tokens=True)["input_ids"]


def speech_frames(input_ids: np.ndarray) -> np.ndarray:
    """Inverse of `frame_row` for the audio: the (n, 7) frames between start_of_speech and end_of_speech.

    Raises rather than drops: a token outside its position's 4096 ids, or a partial last frame, would
    otherwise shift every later code into the wrong codebook.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    starts, ends = np.flatnonzero(ids == START_OF_SPEECH), np.flatnonzero(ids == END_OF_SPEECH)
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError("a row needs exactly one start_of_speech followed by one end_of_speech")
    tokens = ids[starts[0] + 1 : ends[0]]
    if len(tokens) % TOKENS_PER_FRAME:
        raise ValueError(f"{len(tokens)} audio tokens are not whole frames of {TOKENS_PER_FRAME}")
    frames = tokens.reshape(-1, TOKENS_PER_FRAME)
    bad = np.argwhere((frames < FRAME_OFFSETS) | (frames >= FRAME_OFFSETS + CODEBOOK_SIZE))
    if len(bad):
        frame, position = bad[0]
        raise ValueError(
            f"{len(bad)} audio tokens are not codes for their frame position; the first: token "
            f"{frames[frame, position]} at frame {frame}, position {position}"
        )
    return frames


def check_tokenizer(tokenizer) -> None:
    """Fail early, before any encoding, unless the tokenizer has the Orpheus id layout.

    Orpheus' tokenizer is Llama-3's plus `<custom_token_N>` at id 128256 + N: the control tokens and all
    7 x 4096 audio codes must land on exactly those ids, and text must start with BOS.
    """
    last_audio = AUDIO_TOKENS_START + TOKENS_PER_FRAME * CODEBOOK_SIZE - 1
    problems = [
        f"{token} is id {found}, not {expected}"
        for token, expected in [
            ("<|eot_id|>", END_OF_TEXT),
            ("<custom_token_1>", START_OF_SPEECH),
            ("<custom_token_7>", PAD),
            ("<custom_token_10>", AUDIO_TOKENS_START),
            (f"<custom_token_{last_audio - TOKENISER_LENGTH}>", last_audio),
        ]
        if (found := tokenizer.convert_tokens_to_ids(token)) != expected
    ]
    first = tokenizer("a", add_special_tokens=True)["input_ids"][:1]
    if first != [START_OF_TEXT]:
        problems.append(f"text does not start with BOS {START_OF_TEXT} (got {first})")
    if problems:
        raise ValueError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', '')} does not have the Orpheus layout: "
            f"{'; '.join(problems)}. Use the tokenizer of canopylabs/orpheus-3b-0.1-pretrained (or of a "
            "fine-tune of it) as base_model or tokenizer_config."
        )

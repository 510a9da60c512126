"""A plain, per-row re-implementation of the reference recipe (axolotl examples/orpheus README).

Written from the recipe's behaviour: one clip at a time, `.item()` per code, Python lists and loops, the
recipe's own duplicate-frame loop. Deliberately shares no code with the package. It is the tests' oracle
(pytest's pythonpath includes benchmarks/) and the baseline that preprocess.py, beside it, measures speed against.
"""

from __future__ import annotations

import torch

TOKENISER_LENGTH = 128256
END_OF_TEXT = 128009
START_OF_SPEECH = TOKENISER_LENGTH + 1
END_OF_SPEECH = TOKENISER_LENGTH + 2
START_OF_HUMAN = TOKENISER_LENGTH + 3
END_OF_HUMAN = TOKENISER_LENGTH + 4
START_OF_AI = TOKENISER_LENGTH + 5
END_OF_AI = TOKENISER_LENGTH + 6
AUDIO_TOKENS_START = TOKENISER_LENGTH + 10


def tokenise_audio(model, waveform, device: str = "cpu") -> list[int]:
    """24 kHz mono float32 samples -> the recipe's flat list of offset codes."""
    waveform = torch.from_numpy(waveform).unsqueeze(0).to(dtype=torch.float32).unsqueeze(0).to(device)
    with torch.inference_mode():
        codes = model.encode(waveform)
    all_codes = []
    for i in range(codes[0].shape[1]):
        all_codes.append(codes[0][0][i].item() + AUDIO_TOKENS_START)
        all_codes.append(codes[1][0][2 * i].item() + AUDIO_TOKENS_START + 4096)
        all_codes.append(codes[2][0][4 * i].item() + AUDIO_TOKENS_START + 2 * 4096)
        all_codes.append(codes[2][0][4 * i + 1].item() + AUDIO_TOKENS_START + 3 * 4096)
        all_codes.append(codes[1][0][2 * i + 1].item() + AUDIO_TOKENS_START + 4 * 4096)
        all_codes.append(codes[2][0][4 * i + 2].item() + AUDIO_TOKENS_START + 5 * 4096)
        all_codes.append(codes[2][0][4 * i + 3].item() + AUDIO_TOKENS_START + 6 * 4096)
    return all_codes


def remove_duplicate_frames(vals: list[int]) -> list[int]:
    if len(vals) % 7 != 0:
        raise ValueError("Input list length must be divisible by 7")
    result = vals[:7]
    for i in range(7, len(vals), 7):
        if vals[i] != result[-7]:
            result.extend(vals[i : i + 7])
    return result


def create_input_ids(tokenizer, text: str, speaker: str | None, codes_list: list[int]) -> list[int]:
    prompt = f"{speaker}: {text}" if speaker else text
    text_ids = tokenizer.encode(prompt, add_special_tokens=True)
    text_ids.append(END_OF_TEXT)
    return (
        [START_OF_HUMAN]
        + text_ids
        + [END_OF_HUMAN]
        + [START_OF_AI]
        + [START_OF_SPEECH]
        + codes_list
        + [END_OF_SPEECH]
        + [END_OF_AI]
    )


def reference_row(
    model, tokenizer, waveform, text: str, speaker: str | None, dedupe: bool = True, device: str = "cpu"
) -> list[int]:
    codes = tokenise_audio(model, waveform, device)
    return create_input_ids(tokenizer, text, speaker, remove_duplicate_frames(codes) if dedupe else codes)

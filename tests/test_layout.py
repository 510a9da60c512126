"""The Orpheus token layout (axolotl_orpheus.layout) against the layout Orpheus' tokenizer, training data and
decoder use (the ids of canopylabs/orpheus-3b-0.1-pretrained's tokenizer, the reference recipe's interleaving).

Expected values are written out literally or recomputed with plain Python loops, never with the module's
own tables (FRAME_LEVELS, FRAME_OFFSETS, ...), so a wrong table cannot agree with itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axolotl_orpheus import layout

# Deterministic property tests: the same examples on every run, no example database written.
PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)

FIRST_AUDIO_ID = 128266  # <custom_token_10>: the first audio code
CODES = st.integers(min_value=0, max_value=4095)
TEXT_IDS = st.integers(min_value=0, max_value=128255)  # the base Llama-3 vocabulary, no Orpheus specials


@st.composite
def snac_codes(draw, max_frames: int = 12) -> tuple[list[int], list[int], list[int]]:
    """Three SNAC levels of n, 2n and 4n codes in 0..4095, n >= 0."""
    n = draw(st.integers(min_value=0, max_value=max_frames))
    c0 = draw(st.lists(CODES, min_size=n, max_size=n))
    c1 = draw(st.lists(CODES, min_size=2 * n, max_size=2 * n))
    c2 = draw(st.lists(CODES, min_size=4 * n, max_size=4 * n))
    return c0, c1, c2


def frames_from(codes: tuple[list[int], list[int], list[int]]) -> np.ndarray:
    return layout.interleave(*(np.array(c, dtype=np.int64) for c in codes))


def expected_frame_tokens(c0: list[int], c1: list[int], c2: list[int]) -> list[list[int]]:
    """The reference recipe's interleaving, written with plain loops: frame i is c0[i], c1[2i], c2[4i], c2[4i+1],
    c1[2i+1], c2[4i+2], c2[4i+3], and its k-th token is offset by 128266 + k*4096."""
    rows = []
    for i in range(len(c0)):
        codes = [c0[i], c1[2 * i], c2[4 * i], c2[4 * i + 1], c1[2 * i + 1], c2[4 * i + 2], c2[4 * i + 3]]
        rows.append([code + 128266 + k * 4096 for k, code in enumerate(codes)])
    return rows


# --- special ids -----------------------------------------------------------------------------------------


def test_special_ids_match_orpheus() -> None:
    """Guards the literal ids every row is built from (Orpheus' tokenizer: Llama-3's, then <custom_token_N> at
    128256 + N)."""
    assert layout.START_OF_TEXT == 128000
    assert layout.END_OF_TEXT == 128009
    assert (layout.START_OF_SPEECH, layout.END_OF_SPEECH) == (128257, 128258)
    assert (layout.START_OF_HUMAN, layout.END_OF_HUMAN) == (128259, 128260)
    assert (layout.START_OF_AI, layout.END_OF_AI) == (128261, 128262)
    assert layout.PAD == 128263
    assert layout.AUDIO_TOKENS_START == FIRST_AUDIO_ID
    assert layout.IGNORE_INDEX == -100


# --- interleave / deinterleave ---------------------------------------------------------------------------


def test_interleave_exact_example() -> None:
    """Guards the position order and per-position offsets on a hand-made two-frame example."""
    c0 = np.array([10, 11])
    c1 = np.array([20, 21, 22, 23])
    c2 = np.array([30, 31, 32, 33, 34, 35, 36, 37])
    frames = layout.interleave(c0, c1, c2)
    assert frames.shape == (2, 7)
    assert frames.tolist() == [
        # c0[0]      c1[0]         c2[0]         c2[1]          c1[1]          c2[2]          c2[3]
        [128266 + 10, 132362 + 20, 136458 + 30, 140554 + 31, 144650 + 21, 148746 + 32, 152842 + 33],
        # c0[1]      c1[2]         c2[4]         c2[5]          c1[3]          c2[6]          c2[7]
        [128266 + 11, 132362 + 22, 136458 + 34, 140554 + 35, 144650 + 23, 148746 + 36, 152842 + 37],
    ]
    assert frames.tolist() == [
        [128276, 132382, 136488, 140585, 144671, 148778, 152875],
        [128277, 132384, 136492, 140589, 144673, 148782, 152879],
    ]


def test_interleave_extreme_codes() -> None:
    """Code 0 and code 4095 land on the first and last id of each position's block (no off-by-one)."""
    zeros = layout.interleave(np.zeros(1, int), np.zeros(2, int), np.zeros(4, int))
    tops = layout.interleave(np.full(1, 4095), np.full(2, 4095), np.full(4, 4095))
    assert zeros.tolist() == [[128266, 132362, 136458, 140554, 144650, 148746, 152842]]
    assert tops.tolist() == [[132361, 136457, 140553, 144649, 148745, 152841, 156937]]


@PROPERTY
@given(snac_codes())
def test_interleave_matches_formula(codes) -> None:
    """Every position of every frame equals the reference recipe's formula, for any n >= 0 and codes 0..4095."""
    frames = frames_from(codes)
    assert frames.shape == (len(codes[0]), 7)
    assert frames.dtype == np.int64
    assert frames.tolist() == expected_frame_tokens(*codes)


@PROPERTY
@given(snac_codes())
def test_deinterleave_inverts_interleave(codes) -> None:
    """deinterleave(interleave(codes)) gives back the three levels exactly, n = 0 included."""
    c0, c1, c2 = layout.deinterleave(frames_from(codes))
    assert (c0.tolist(), c1.tolist(), c2.tolist()) == codes


def test_deinterleave_of_no_frames() -> None:
    """Zero frames give three empty levels (a silent clip must not crash)."""
    levels = layout.deinterleave(np.empty((0, 7), dtype=np.int64))
    assert [len(level) for level in levels] == [0, 0, 0]


@pytest.mark.parametrize(
    ("n0", "n1", "n2"),
    [(1, 1, 4), (1, 3, 4), (1, 2, 3), (1, 2, 5), (2, 2, 4), (0, 2, 4), (0, 0, 4), (3, 6, 11), (1, 4, 2)],
)
def test_interleave_rejects_wrong_lengths(n0: int, n1: int, n2: int) -> None:
    """Levels that are not n, 2n, 4n long raise instead of silently misaligning codes."""
    with pytest.raises(ValueError, match=rf"n, 2n, 4n.*got {n0}, {n1}, {n2}"):
        layout.interleave(np.zeros(n0, int), np.zeros(n1, int), np.zeros(n2, int))


# --- duplicate_frame_mask --------------------------------------------------------------------------------


def reference_remove_duplicate_frames(flat: list[int]) -> list[int]:
    """The reference recipe's loop, on a flat list of tokens: keep the first frame, then append a frame
    only when its first token differs from the first token of the last kept frame."""
    result = flat[:7]
    for i in range(7, len(flat), 7):
        if flat[i] != result[-7]:
            result.extend(flat[i : i + 7])
    return result


def reference_keep_mask(first_tokens: list[int]) -> list[bool]:
    keep, last_kept = [], None
    for i, token in enumerate(first_tokens):
        keep.append(i == 0 or token != last_kept)
        if keep[-1]:
            last_kept = token
    return keep


@st.composite
def repetitive_frames(draw) -> np.ndarray:
    """Frames whose first codes come from 0..2, so runs of equal first codes are common."""
    n = draw(st.integers(min_value=0, max_value=30))
    first = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    rest = draw(st.lists(st.lists(CODES, min_size=6, max_size=6), min_size=n, max_size=n))
    codes = np.array([[f, *r] for f, r in zip(first, rest)], dtype=np.int64).reshape(n, 7)
    return codes + FIRST_AUDIO_ID + 4096 * np.arange(7)


def test_duplicate_frame_mask_exact_example() -> None:
    """Runs collapse to their first frame; a code that comes back after a different one is kept."""
    first = [5, 5, 5, 6, 5, 5, 7, 7, 6]
    frames = np.array([[FIRST_AUDIO_ID + f] + [132362 + i] * 6 for i, f in enumerate(first)])
    assert layout.duplicate_frame_mask(frames).tolist() == [
        True, False, False, True, True, False, True, False, True
    ]  # fmt: skip


@PROPERTY
@given(repetitive_frames())
def test_duplicate_frame_mask_matches_reference_loop(frames: np.ndarray) -> None:
    """Same decisions as the reference recipe's loop, frame by frame and on the kept tokens."""
    keep = layout.duplicate_frame_mask(frames)
    assert keep.dtype == bool
    assert keep.tolist() == reference_keep_mask(frames[:, 0].tolist())
    assert frames[keep].reshape(-1).tolist() == reference_remove_duplicate_frames(frames.reshape(-1).tolist())


@PROPERTY
@given(repetitive_frames())
def test_duplicate_frame_mask_properties(frames: np.ndarray) -> None:
    """One flag per frame, frame 0 always kept, no two neighbouring kept frames share a first code,
    and every dropped frame repeats the first code of the frame kept before it."""
    keep = layout.duplicate_frame_mask(frames)
    assert keep.shape == (len(frames),)
    if len(frames):
        assert keep[0]
    kept_first = frames[keep, 0].tolist()
    assert all(a != b for a, b in zip(kept_first, kept_first[1:]))
    last_kept = None
    for token, kept in zip(frames[:, 0].tolist(), keep.tolist()):
        if kept:
            last_kept = token
        else:
            assert token == last_kept


def test_duplicate_frame_mask_of_no_frames() -> None:
    """An empty clip gives an empty mask."""
    assert layout.duplicate_frame_mask(np.empty((0, 7), dtype=np.int64)).tolist() == []


# --- frame_row / speech_labels / prompt_text --------------------------------------------------------------

PROMPT = [128000, 83, 5169, 25, 22691]  # "tara: Hello" with BOS, as Orpheus' tokenizer gives it
TWO_FRAMES = np.array(
    [
        [128276, 132382, 136488, 140585, 144671, 148778, 152875],
        [128277, 132384, 136492, 140589, 144673, 148782, 152879],
    ]
)


def test_frame_row_exact_example() -> None:
    """The row is [128259] + prompt + [128009, 128260, 128261, 128257] + frames + [128258, 128262]."""
    row = layout.frame_row(np.array(PROMPT), TWO_FRAMES)
    assert row.dtype.kind == "i"
    assert row.tolist() == [
        128259,
        128000, 83, 5169, 25, 22691,
        128009, 128260, 128261, 128257,
        128276, 132382, 136488, 140585, 144671, 148778, 152875,
        128277, 132384, 136492, 140589, 144673, 148782, 152879,
        128258, 128262,
    ]  # fmt: skip


def test_frame_row_without_frames() -> None:
    """Zero frames still give a well-formed row: start_of_speech directly followed by end_of_speech."""
    row = layout.frame_row(np.array(PROMPT), np.empty((0, 7), dtype=np.int64))
    assert row.tolist() == [128259, *PROMPT, 128009, 128260, 128261, 128257, 128258, 128262]


def test_speech_labels_exact_example() -> None:
    """Exactly the first 1 + len(prompt) + 4 labels (through start_of_speech) are -100; the input is untouched."""
    row = layout.frame_row(np.array(PROMPT), TWO_FRAMES)
    before = row.copy()
    labels = layout.speech_labels(row, len(PROMPT))
    assert labels.tolist() == [-100] * 10 + row[10:].tolist()
    assert row.tolist() == before.tolist()


@PROPERTY
@given(st.lists(TEXT_IDS, max_size=20), snac_codes(max_frames=6))
def test_speech_labels_property(prompt: list[int], codes) -> None:
    """For any prompt and frames: the masked prefix ends exactly at start_of_speech, the rest equals input_ids."""
    row = layout.frame_row(np.array(prompt, dtype=np.int64), frames_from(codes))
    labels = layout.speech_labels(row, len(prompt))
    n_masked = 1 + len(prompt) + 4
    assert labels.shape == row.shape
    assert labels[:n_masked].tolist() == [-100] * n_masked
    assert labels[n_masked:].tolist() == row[n_masked:].tolist()
    assert row[n_masked - 1] == 128257  # the last masked token is start_of_speech
    assert -100 not in row.tolist()  # speech_labels must not have written into input_ids


@pytest.mark.parametrize(
    ("text", "speaker", "expected"),
    [
        ("Hello", "tara", "tara: Hello"),
        ("Hello there. <laugh>", "leo", "leo: Hello there. <laugh>"),
        ("Hello", None, "Hello"),
        ("Hello", "", "Hello"),
    ],
)
def test_prompt_text(text: str, speaker: str | None, expected: str) -> None:
    """ "{speaker}: {text}" for a multi-speaker row, the bare text without a speaker (None or "")."""
    assert layout.prompt_text(text, speaker) == expected


# --- speech_frames ---------------------------------------------------------------------------------------


@PROPERTY
@given(st.lists(TEXT_IDS, max_size=20), snac_codes())
def test_speech_frames_inverts_frame_row(prompt: list[int], codes) -> None:
    """speech_frames(frame_row(prompt, frames)) gives back the frames exactly, zero frames included."""
    frames = frames_from(codes)
    recovered = layout.speech_frames(layout.frame_row(np.array(prompt, dtype=np.int64), frames))
    assert recovered.shape == (len(codes[0]), 7)
    assert recovered.tolist() == frames.tolist()


def row_with_audio(audio_tokens: list[int]) -> list[int]:
    """A row built by hand (not with frame_row), so the error tests can put anything between the markers."""
    return [128259, *PROMPT, 128009, 128260, 128261, 128257, *audio_tokens, 128258, 128262]


def test_speech_frames_accepts_a_hand_built_row() -> None:
    """The hand-built row helper agrees with the exact frames (sanity for the error tests below)."""
    row = row_with_audio(TWO_FRAMES.reshape(-1).tolist())
    assert layout.speech_frames(np.array(row)).tolist() == TWO_FRAMES.tolist()


@pytest.mark.parametrize(
    ("frame", "position", "token"),
    [
        (0, 0, 132362 + 5),  # a position-1 code at position 0
        (1, 3, 140553),  # one below position 3's block (position 2's code 4095)
        (1, 3, 144650),  # one above position 3's block (position 4's code 0)
        (0, 6, 156938),  # past the last audio id
        (0, 2, 128263),  # pad inside the audio
        (1, 4, 22691),  # a text token
    ],
)
def test_speech_frames_rejects_token_out_of_its_position_range(frame: int, position: int, token: int) -> None:
    """A token outside its position's 4096 ids raises, naming the token, its frame and position."""
    frames = TWO_FRAMES.copy()
    frames[frame, position] = token
    row = np.array(row_with_audio(frames.reshape(-1).tolist()))
    with pytest.raises(
        ValueError, match=rf"not codes for their frame position.*token {token} at frame {frame}, position {position}"
    ):
        layout.speech_frames(row)


def test_speech_frames_counts_all_bad_tokens() -> None:
    """The message counts every misplaced token and names the first one."""
    frames = TWO_FRAMES.copy()
    frames[0, 5] = 128266  # a position-0 code at position 5
    frames[1, 0] = 152842  # a position-6 code at position 0
    with pytest.raises(ValueError, match=r"^2 audio tokens .*token 128266 at frame 0, position 5"):
        layout.speech_frames(np.array(row_with_audio(frames.reshape(-1).tolist())))


@pytest.mark.parametrize("drop", [1, 3, 6])
def test_speech_frames_rejects_partial_last_frame(drop: int) -> None:
    """Audio whose token count is not a multiple of 7 raises instead of shifting codes into other positions."""
    tokens = TWO_FRAMES.reshape(-1).tolist()[:-drop]
    with pytest.raises(ValueError, match=rf"{14 - drop} audio tokens are not whole frames of 7"):
        layout.speech_frames(np.array(row_with_audio(tokens)))


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(row_with_audio(TWO_FRAMES.reshape(-1).tolist())[:-2], id="no end_of_speech (truncated)"),
        pytest.param(
            [t for t in row_with_audio(TWO_FRAMES.reshape(-1).tolist()) if t != 128258], id="no end_of_speech"
        ),
        pytest.param(
            [t for t in row_with_audio(TWO_FRAMES.reshape(-1).tolist()) if t != 128257], id="no start_of_speech"
        ),
        pytest.param(row_with_audio([*TWO_FRAMES[0].tolist(), 128258, *TWO_FRAMES[1].tolist()]), id="two ends"),
        pytest.param(row_with_audio([*TWO_FRAMES[0].tolist(), 128257, *TWO_FRAMES[1].tolist()]), id="two starts"),
        pytest.param([128259, 128258, *TWO_FRAMES[0].tolist(), 128257, 128262], id="end before start"),
        pytest.param([], id="empty row"),
    ],
)
def test_speech_frames_rejects_missing_or_misplaced_markers(row: list[int]) -> None:
    """Without exactly one start_of_speech followed by one end_of_speech there is no audio to read."""
    with pytest.raises(ValueError, match="exactly one start_of_speech followed by one end_of_speech"):
        layout.speech_frames(np.array(row, dtype=np.int64))

"""Where `axolotl-orpheus segment` cuts a recording, and which words of a known transcript each clip holds.

Pure functions on arrays, no audio and no models: the speech probability and energy of every voice-activity
window in, clip spans out (segment.py computes the probabilities with Silero VAD); the ASR's words of each clip
in, the transcript's words of each clip out. Why the defaults are what they are: docs/segment.md.
"""

from __future__ import annotations

from math import isqrt
from typing import NamedTuple

import numpy as np

from axolotl_orpheus.listen import scoring

VAD_RATE, WINDOW_SAMPLES = 16000, 512  # Silero VAD hears 512 samples at 16 kHz at a time
WINDOW_SECONDS = WINDOW_SAMPLES / VAD_RATE  # 32 ms
# Silero's own reading of its probabilities: speech starts at 0.5 and lasts until below 0.35.
SPEECH_THRESHOLD, SILENCE_THRESHOLD = 0.5, 0.35
PAUSE_SECONDS = 0.4  # no speech this long is a pause between sentences, where clips end; shorter ones stay inside
JOIN_PAUSE_SECONDS = 1.0  # a clip too short joins a neighbour across a pause up to this long
# Silence kept before and after a clip's speech, at most: long trailing silence teaches the model not to stop.
# Silero's speech starts up to 50 ms late and ends up to 100 ms after the sound (docs/segment.md), so 0.2 s
# before and 0.1 s after leave at most about 0.2 s of quiet at either end.
LEAD_SECONDS, TAIL_SECONDS = 0.2, 0.1
EDGES_SECONDS = LEAD_SECONDS + TAIL_SECONDS
NEAR = 0.5  # a heard word within this character error rate of a known word is that word, misheard a little


class Span(NamedTuple):
    """A clip's place in the recording."""

    start: float  # seconds
    end: float
    too_short: bool  # its speech lasts less than min_seconds: dropped and counted
    lead: float  # seconds of it before its speech
    tail: float  # and after


def speech_mask(probabilities: np.ndarray) -> np.ndarray:
    """Whether each window is speech, with Silero's hysteresis: from a window at SPEECH_THRESHOLD or above until
    one below SILENCE_THRESHOLD. Each window takes the verdict of the last window that was clearly one or the
    other (none yet: silence)."""
    loud = probabilities >= SPEECH_THRESHOLD
    decided = loud | (probabilities < SILENCE_THRESHOLD)
    last_decided = np.maximum.accumulate(np.where(decided, np.arange(len(probabilities)), -1))
    return (last_decided >= 0) & loud[np.maximum(last_decided, 0)]


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The starts and (exclusive) ends of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def plan_cuts(
    probabilities: np.ndarray, energies: np.ndarray, seconds: float, min_seconds: float = 1.0, max_seconds: float = 20.0
) -> list[Span]:
    """Clip spans for a recording of `seconds` from its windows' speech probabilities and energies (dB).

    Speech is cut at every pause; a stretch whose speech lasts longer than `max_seconds` less both edges is cut
    at its longest internal pause, then at its quietest window (of those leaving both sides within bounds, where
    any do), never elsewhere; a stretch shorter than `min_seconds` joins a neighbour when it fits; each clip
    keeps a little of the silence around it. So every clip not too short lasts `min_seconds`..`max_seconds`, and
    none cuts through speech unless speech went on past `max_seconds` without a pause.
    """
    speech = speech_mask(np.asarray(probabilities))
    starts, ends = runs(speech)
    if not len(starts):
        return []
    # The speech runs a pause follows, and so the first and last run of each stretch between pauses.
    before_pause = np.flatnonzero((starts[1:] - ends[:-1]) * WINDOW_SECONDS >= PAUSE_SECONDS)
    firsts, lasts = np.concatenate([[0], before_pause + 1]), np.concatenate([before_pause, [len(starts) - 1]])
    longest = int((max_seconds - EDGES_SECONDS) / WINDOW_SECONDS)
    shortest = int(np.ceil(min_seconds / WINDOW_SECONDS))
    pieces = [
        piece
        for first, last in zip(firsts, lasts)
        for piece in _split(speech, np.asarray(energies), int(starts[first]), int(ends[last]), longest, shortest)
    ]
    pieces = _join_short(np.array(pieces), longest, shortest, int(JOIN_PAUSE_SECONDS / WINDOW_SECONDS))
    return _with_edges(pieces, seconds, shortest)


def _split(
    speech: np.ndarray, energies: np.ndarray, start: int, end: int, longest: int, shortest: int
) -> list[tuple[int, int]]:
    """Speech from window `start` to `end` in pieces of at most `longest` windows, in order: cut at the longest
    gap in the speech, else before the quietest window, of the cuts that leave both sides within bounds where
    there are any (_preferred); each side again until it fits."""
    pieces, pending = [], [(start, end)]
    while pending:
        start, end = pending.pop()
        if end - start <= longest:
            pieces.append((start, end))
            continue
        gap_starts, gap_ends = runs(~speech[start:end])  # the piece starts and ends with speech: all gaps are inside
        if len(gap_starts):
            candidates = _preferred(gap_starts, end - start - gap_ends, longest, shortest)
            best = candidates[np.argmax((gap_ends - gap_starts)[candidates])]
            left_end, right_start = start + int(gap_starts[best]), start + int(gap_ends[best])
        else:
            before = np.arange(1, end - start)  # cut before this window
            candidates = _preferred(before, end - start - before, longest, shortest)
            left_end = right_start = start + int(before[candidates[np.argmin(energies[start + before[candidates]])]])
        pending += [(right_start, end), (start, left_end)]  # the left side next
    return pieces


def _preferred(lefts: np.ndarray, rights: np.ndarray, longest: int, shortest: int) -> np.ndarray:
    """Which of the cuts leaving `lefts` and `rights` windows to choose among: those that leave both sides
    `shortest` to `longest` (one cut is enough), else those that leave both at least `shortest` (none dropped
    as too short), else all."""
    long_enough = (lefts >= shortest) & (rights >= shortest)
    for allowed in (long_enough & (lefts <= longest) & (rights <= longest), long_enough):
        if allowed.any():
            return np.flatnonzero(allowed)
    return np.arange(len(lefts))


def _join_short(pieces: np.ndarray, longest: int, shortest: int, join_pause: int) -> np.ndarray:
    """Join each piece shorter than `shortest` to the neighbour across its shorter pause, when that pause is at
    most `join_pause` and the joined piece at most `longest` windows (joins refused for length are left out)."""
    starts, ends = pieces[:, 0], pieces[:, 1]
    pauses = (starts[1:] - ends[:-1]).astype(float)
    short = ends - starts < shortest
    before = np.concatenate([[np.inf], pauses])  # the pause before each piece, and after it
    after = np.concatenate([pauses, [np.inf]])
    wants_before = short & (before <= join_pause) & ((before <= after) | (after > join_pause))
    wants_after = short & (after <= join_pause) & ~wants_before
    join = wants_after[:-1] | wants_before[1:]  # at each pause: do the pieces either side join?
    joined = [[int(starts[0]), int(ends[0])]]
    for start, end, joins in zip(starts[1:], ends[1:], join):
        if joins and end - joined[-1][0] <= longest:
            joined[-1][1] = int(end)
        else:
            joined.append([int(start), int(end)])
    return np.array(joined)


def _with_edges(pieces: np.ndarray, seconds: float, shortest: int) -> list[Span]:
    """Each piece with up to LEAD_SECONDS of the silence before it and TAIL_SECONDS after, never more than half
    the pause to the next piece (clips never overlap), and none at a cut through speech."""
    too_short = pieces[:, 1] - pieces[:, 0] < shortest
    starts = pieces[:, 0] * WINDOW_SECONDS
    ends = np.minimum(pieces[:, 1] * WINDOW_SECONDS, seconds)  # the last window may run past the last sample
    half_pauses = (starts[1:] - ends[:-1]) / 2
    room_before = np.concatenate([[starts[0]], half_pauses])
    room_after = np.concatenate([half_pauses, [seconds - ends[-1]]])
    leads, tails = np.clip(room_before, 0, LEAD_SECONDS), np.clip(room_after, 0, TAIL_SECONDS)
    return [
        Span(float(start - lead), float(end + tail), bool(short), float(lead), float(tail))
        for start, end, short, lead, tail in zip(starts, ends, too_short, leads, tails)
    ]


class HeardWord(NamedTuple):
    """A word the ASR heard in a clip."""

    text: str
    clip: int  # index into the clips
    start: float  # seconds within its clip
    end: float


def word_key(word: str) -> str:
    """What two spellings of a word share for alignment: its letters and digits, case folded."""
    return "".join(character for character in word.casefold() if character.isalnum())


def align_words(known: list[str], heard: list[str]) -> np.ndarray:
    """For each known word, the index of the heard word that a least-edits alignment (Levenshtein) pairs it
    with, equal or substituted, or -1 where the alignment has the known word unheard.

    The table's rows (one per known word) are computed a row at a time (scoring.next_edit_row, edit_distance's
    recurrence); only every sqrt(n)-th row is kept, and each block of rows is computed again from its first when the
    path is traced back through it: memory grows as sqrt(n) * m.
    """
    known_ids, heard_ids = scoring.as_ids(known, heard)

    def rows(first_row: np.ndarray, first: int, stop: int) -> np.ndarray:
        """The table's rows `first`..`stop` (row i: the first i known words), from row `first`."""
        table = [first_row]
        for index in range(first, stop):
            table.append(scoring.next_edit_row(table[-1], index + 1, known_ids[index], heard_ids))
        return np.array(table)

    step = max(1, isqrt(len(known)))
    checkpoints = {0: np.arange(len(heard) + 1)}
    for first in range(0, len(known), step):  # (a copy: a view would keep the whole block)
        checkpoints[first + step] = rows(checkpoints[first], first, min(first + step, len(known)))[-1].copy()
    pairs = np.full(len(known), -1)
    i, j = len(known), len(heard)
    for first in reversed(range(0, len(known), step)):
        table = rows(checkpoints[first], first, i)
        while i > first:
            row, above = table[i - first], table[i - first - 1]
            if j and row[j] == above[j - 1] + (known_ids[i - 1] != heard_ids[j - 1]):
                i, j = i - 1, j - 1
                pairs[i] = j
            elif row[j] == above[j] + 1:
                i -= 1
            else:  # a heard word the text does not have
                j -= 1
    return pairs


def words_per_clip(known: list[str], heard: list[HeardWord], speech: list[tuple[float, float]]) -> list[list[str]]:
    """The known transcript's words split among the clips, each word in exactly one, in order; `speech` is
    where each clip's speech starts and ends (seconds within it), and there is at least one clip.

    A known word aligned with a heard word spelt the same or nearly (NEAR) is anchored: it goes to that word's
    clip. A run of the others, unheard or misheard, goes to the clips around it in proportion to the speech there
    that no anchored word accounts for: in the clip before, the speech after the run's previous anchored word;
    the clips between, all their speech; in the clip after, the speech before its next anchored word. (So in a
    clip heard all wrong, its words go with it, not to its neighbours.)
    """
    known_keys, heard_keys = [word_key(word) for word in known], [word_key(word.text) for word in heard]
    pairs = align_words(known_keys, heard_keys)
    anchored = np.array(
        [
            pair >= 0 and scoring.character_error_rate(key, heard_keys[pair]) <= NEAR
            for key, pair in zip(known_keys, pairs)
        ],
        dtype=bool,
    )
    speech_starts, speech_ends = np.asarray(speech, dtype=float).reshape(-1, 2).T
    clip_of = np.array([heard[pair].clip if anchor else -1 for pair, anchor in zip(pairs, anchored)], dtype=np.int64)
    for first, stop in zip(*runs(~anchored)):
        before = pairs[first - 1] if first > 0 else None
        after = pairs[stop] if stop < len(known) else None
        first_clip = 0 if before is None else heard[before].clip
        last_clip = len(speech_starts) - 1 if after is None else heard[after].clip
        room_starts = speech_starts[first_clip : last_clip + 1].copy()
        room_ends = speech_ends[first_clip : last_clip + 1].copy()
        if before is not None:
            room_starts[0] = max(room_starts[0], heard[before].end)
        if after is not None:
            room_ends[-1] = min(room_ends[-1], heard[after].start)
        room = np.maximum(room_ends - room_starts, 0) + 1e-9  # no room anywhere: an even share
        positions = (np.arange(stop - first) + 0.5) / (stop - first) * room.sum()
        clip_of[first:stop] = first_clip + np.minimum(np.searchsorted(np.cumsum(room), positions), len(room) - 1)
    texts: list[list[str]] = [[] for _ in speech_starts]
    for word, clip in zip(known, clip_of):
        texts[clip].append(word)
    return texts

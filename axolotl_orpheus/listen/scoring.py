"""What the scores of a spoken sample are: pure functions on texts, transcripts and embeddings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

LOOP_NGRAM = 4  # a repeated run of this many words is a loop: any longer repeated run holds one
ENGLISH = {"en", "english"}


def normalise(text: str, language: str | None = None, english_spelling: dict[str, str] | None = None) -> str:
    """`text` as Whisper's evaluation compares it: its English normaliser (numbers, spellings, contractions)
    for English, its basic one (case, punctuation, marks in brackets) for every other language."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    normaliser = EnglishTextNormalizer(english_spelling or {}) if language in ENGLISH else BasicTextNormalizer()
    return " ".join(normaliser(text).split())


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions that turn one into the other."""
    reference_ids, hypothesis_ids = as_ids(reference, hypothesis)
    row = np.arange(len(hypothesis_ids) + 1)
    for index, item in enumerate(reference_ids, start=1):
        row = next_edit_row(row, index, item, hypothesis_ids)
    return int(row[-1])


def next_edit_row(row: np.ndarray, index: int, item: int, hypothesis_ids: np.ndarray) -> np.ndarray:
    """Row `index` of the Levenshtein table (the reference's first `index` items against each prefix of the
    hypothesis) from row `index` - 1 and the reference's `index`-th item, computed at once: substitutions and
    deletions from the row above, then insertions as a running minimum (row[j] - j is the running minimum of its
    candidates - j)."""
    columns = np.arange(len(row))
    candidates = np.empty_like(row)
    candidates[0] = index
    candidates[1:] = np.minimum(row[:-1] + (hypothesis_ids != item), row[1:] + 1)
    return np.minimum.accumulate(candidates - columns) + columns


def as_ids(*sequences: Sequence) -> list[np.ndarray]:
    """The sequences as integers, equal items equal, so that comparisons are array operations."""
    vocabulary: dict = {}
    return [np.array([vocabulary.setdefault(item, len(vocabulary)) for item in items], np.int64) for items in sequences]


def error_rate(reference: Sequence, hypothesis: Sequence) -> float:
    """Edit distance over the reference's length; nothing to say and nothing said is 0, something said is 1."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    return edit_distance(reference, hypothesis) / len(reference)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """CER of two normalised texts, spaces counted as characters."""
    return error_rate(reference, hypothesis)


def word_error_rate(reference: str, hypothesis: str) -> float:
    return error_rate(reference.split(), hypothesis.split())


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(zip(*(words[i:] for i in range(n))))


def loops(text: str, transcript: str, n: int = LOOP_NGRAM) -> bool:
    """Whether the transcript repeats a run of `n` words more often than the text does: speech that loops."""
    said, written = _ngrams(transcript.split(), n), _ngrams(text.split(), n)
    return any(count > max(1, written[ngram]) for ngram, count in said.items())


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

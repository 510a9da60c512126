"""Long text cut into pieces Orpheus can speak one generation at a time: at sentence ends, then clauses."""

from __future__ import annotations

import functools
import re

# About DEFAULT_MAX_NEW_TOKENS new tokens (15 s of audio) fit this much text at a normal speaking rate, in Latin
# letters.
MAX_CHARS = 200
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

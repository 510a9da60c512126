"""The scores' pure functions on known values: edit distance, CER/WER, normalisation, loops, cosine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from axolotl_orpheus.listen.scoring import (
    character_error_rate,
    cosine_similarity,
    edit_distance,
    loops,
    normalise,
    word_error_rate,
)


def table_distance(a, b) -> int:
    """The textbook dynamic programme, cell by cell, as the oracle for the vectorised one."""
    above = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        row = [i]
        for j, y in enumerate(b, start=1):
            row.append(min(above[j] + 1, row[j - 1] + 1, above[j - 1] + (x != y)))
        above = row
    return above[-1]


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("", "abc", 3),
        ("abc", "", 3),
        ("same", "same", 0),
        ("ab", "ba", 2),
        ("intention", "execution", 5),
    ],
)
def test_edit_distance_of_known_strings(a, b, distance):
    assert edit_distance(a, b) == distance


@given(st.text("abc ", max_size=14), st.text("abc ", max_size=14))
def test_edit_distance_equals_the_textbook_table(a, b):
    assert edit_distance(a, b) == table_distance(a, b)
    assert edit_distance(a.split(), b.split()) == table_distance(a.split(), b.split())  # words as items too


def test_error_rates_count_against_the_reference():
    assert character_error_rate("kitten", "sitting") == pytest.approx(3 / 6)
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "a dog") == pytest.approx(1.0)  # two substitutions and a deletion
    assert character_error_rate("", "") == 0.0 and character_error_rate("", "noise") == 1.0


def test_english_uses_whispers_normaliser_and_others_the_basic_one():
    # Titles, numbers and currency spelled as Whisper's evaluation does; British spellings from normalizer.json.
    assert normalise("Mr. Smith paid 25 dollars for the colour!", "en", {"colour": "color"}) == (
        "mister smith paid $25 for the color"
    )
    assert normalise("I'm going.", "english") == "i am going"
    assert normalise("Ça, c'est [bruit] génial !", "fr") == "ça c est génial"  # case, punctuation, bracketed marks
    assert normalise("Hello,   world", None) == "hello world"  # no language known: the basic one


def test_a_loop_is_a_run_of_words_said_more_often_than_written():
    assert loops("the cat sat on the mat", "the cat sat on the cat sat on the mat")
    assert not loops("the cat sat on the mat", "the cat sat on the mat")
    # A text that repeats itself may be read as written.
    assert not loops("go on and on go on and on", "go on and on go on and on")
    assert loops("go on and on go on and on", "go on and on go on and on go on and on")
    assert not loops("a b c", "a b c a b c")  # runs shorter than four words are not loops


def test_cosine_similarity_of_known_vectors():
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 1.0]), np.array([-1.0, -1.0])) == pytest.approx(-1.0)
    assert cosine_similarity(np.array([3.0, 4.0]), np.array([4.0, 3.0])) == pytest.approx(24 / 25)

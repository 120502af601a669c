"""datamodules.synthvtr.lexicon: every value a scene can hold has its words, and no phrase names two values (the
caption reader, attributes.py, could not tell them apart)."""

from __future__ import annotations

from datamodules.synthvtr.lexicon import (
    BACKGROUNDS,
    COLOUR_RGB,
    COLOUR_WORDS,
    COLOURS,
    MOTION_WORDS,
    MOTIONS,
    SCENE_NOUNS,
    SCENE_WORDS,
    SHAPE_WORDS,
    SHAPES,
)


def test_every_value_has_several_words_and_the_tables_name_only_known_values() -> None:
    for values, *tables in ((COLOURS, COLOUR_WORDS), (SHAPES, SHAPE_WORDS), (MOTIONS, MOTION_WORDS),
                            (BACKGROUNDS, SCENE_WORDS, SCENE_NOUNS)):
        for table in tables:
            assert tuple(table) == values  # same values, same order as the specs store them
            assert all(len(words) >= 3 and len(set(words)) == len(words) for words in table.values())
    assert all(len(rgb) == 3 and all(0 <= c <= 255 for c in rgb) for rgb in COLOUR_RGB.values())


def test_no_phrase_names_two_values() -> None:
    owner: dict[str, str] = {}
    for kind, table in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS), ("motion", MOTION_WORDS),
                        ("background", SCENE_WORDS), ("background", SCENE_NOUNS)):
        for value, words in table.items():
            for phrase in words:
                assert phrase == phrase.lower().strip(), phrase
                assert owner.setdefault(phrase, f"{kind}:{value}") == f"{kind}:{value}", phrase

"""Which SynthVTR attribute values a free-text caption mentions, and whether the video has them.

A trained captioner (CaRe-DPO's, ``lightning_modules/captioning/training.py``) writes free text, not the
generator's facts, so its captions are read back through the lexicon: every synonym of a colour, shape, motion or
background (``lexicon.py``) is looked up, longest phrase first and each stretch of text used once (so "snow white"
is a colour, not the snow background). A mention is *correct* when the video shows that value: a colour or shape
of one of its objects (any frame), one of its objects' motions, its background. ``attribute_precision`` is
correct mentions / mentions (hallucination shows up as a low value), ``attribute_recall`` the share of the
video's values (distinct colours, shapes, motions and its background) that the caption mentions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from datamodules.synthvtr.lexicon import COLOUR_WORDS, MOTION_WORDS, SCENE_NOUNS, SCENE_WORDS, SHAPE_WORDS

ATTRIBUTE_KINDS: tuple[str, ...] = ("colour", "shape", "motion", "background")


@lru_cache(maxsize=1)
def _phrases() -> list[tuple[re.Pattern[str], str, str]]:
    table: list[tuple[str, str, str]] = []
    for kind, words in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS), ("motion", MOTION_WORDS),
                        ("background", SCENE_WORDS), ("background", SCENE_NOUNS)):
        for value, synonyms in words.items():
            table.extend((phrase, kind, value) for phrase in synonyms)
    table.sort(key=lambda row: -len(row[0]))
    return [(re.compile(rf"\b{re.escape(phrase)}\b"), kind, value) for phrase, kind, value in table]


def mentioned_values(caption: str) -> set[tuple[str, str]]:
    """``{(kind, value)}`` the caption mentions (kind: colour, shape, motion, background)."""
    text = " " + caption.lower() + " "
    found: set[tuple[str, str]] = set()
    for pattern, kind, value in _phrases():
        if pattern.search(text):
            found.add((kind, value))
            text = pattern.sub(" | ", text)  # a stretch of text counts once (longest phrase first)
    return found


def video_values(facts: Iterable[str]) -> set[tuple[str, str]]:
    """``{(kind, value)}`` a video shows, from its generator facts (``video_facts.jsonl``)."""
    values: set[tuple[str, str]] = set()
    for fact in facts:
        head, *parts = fact.split(":")
        if head == "bg":
            values.add(("background", parts[0]))
        elif head == "obj":
            values.update({("colour", parts[0]), ("shape", parts[1])})
        elif head == "mots":
            values.update({("shape", parts[0]), ("motion", parts[1])})
    return values


def attribute_counts(caption: str, facts: Iterable[str]) -> tuple[int, int, int]:
    """``(correct mentions, mentions, values the video shows)`` for one caption: precision is the first over the
    second, recall the first over the third."""
    truth = video_values(facts)
    said = mentioned_values(caption)
    return len(said & truth), len(said), len(truth)


def attribute_scores(captions: dict[str, str], facts: dict[str, Iterable[str]]) -> dict[str, float | None]:
    """Attribute precision and recall of a caption per video, pooled over the videos (None without mentions/values)."""
    correct = mentioned = truth = 0
    for video_id, caption in captions.items():
        c, m, t = attribute_counts(caption, facts[video_id])
        correct, mentioned, truth = correct + c, mentioned + m, truth + t
    return {"attribute_precision": correct / mentioned if mentioned else None,
            "attribute_recall": correct / truth if truth else None}

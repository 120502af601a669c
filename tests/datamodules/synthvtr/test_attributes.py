"""datamodules.synthvtr.attributes: the attribute values a free-text caption mentions, read longest phrase first, and
the precision and recall of those mentions against what the video shows."""

from __future__ import annotations

import pytest

from datamodules.synthvtr.attributes import attribute_counts, attribute_scores, mentioned_values, video_values


def test_attribute_reading_takes_the_longest_phrase_once() -> None:
    said = mentioned_values("a snow white ball moves left in the snow next to a crimson box")
    assert said == {("colour", "white"), ("shape", "circle"), ("motion", "left"), ("background", "snow"),
                    ("colour", "red"), ("shape", "square")}
    truth = video_values(["bg:snow", "obj:white:circle", "mots:circle:left", "mot:white:circle:left"])
    assert attribute_counts("a snow white ball moves left in the snow next to a crimson box",
                            ["bg:snow", "obj:white:circle", "mots:circle:left"]) == (4, 6, len(truth))


def test_scores_pool_the_videos_and_are_none_without_mentions() -> None:
    facts = {"a": ["bg:grass", "obj:red:circle"], "b": ["bg:sand", "obj:blue:star", "mots:star:spin"]}
    scores = attribute_scores({"a": "a crimson ball on a lawn", "b": "a yellow star"}, facts)
    # a: red, circle, grass all correct (3 of 3 values); b: star correct, yellow wrong (1 of 4 values)
    assert scores == {"attribute_precision": pytest.approx(4 / 5), "attribute_recall": pytest.approx(4 / 7)}
    assert attribute_scores({"a": "something happens"}, {"a": []}) == {"attribute_precision": None,
                                                                        "attribute_recall": None}

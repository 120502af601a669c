"""The leakage verdict computed from lineage nodes: each way test data can reach a number, and clean chains."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.annotations import Split, TextEntry, VideoEntry
from datamodules.lineage import (
    CAPTIONED_VIDEOS,
    GROUND_TRUTH,
    PREFERENCE_LABELS,
    PROBE_SET,
    PROMPT_TEXTS,
    PROMPT_TEXTS_WRITTEN,
    QUERY_BANK,
    SELECTION,
    TEST,
    TRAINING,
    TestSet,
    ids_sha256,
    leakage_verdict,
    node,
    read_record,
    read_sidecar,
    split_read,
    verdict_text,
    write_sidecar,
)


def _split(name: str, videos: list[str], texts_per_video: int = 2) -> Split:
    entries = [VideoEntry(v, Path(f"{v}.mp4")) for v in videos]
    texts = [TextEntry(f"{v}#{k}", f"text {k} of {v}", i) for i, v in enumerate(videos) for k in range(texts_per_video)]
    return Split(name, entries, texts, "all captions")


TRAIN = _split("train", [f"t{i}" for i in range(8)])
VAL = _split("val", ["t6", "t7"])
TEST_SPLIT = _split("test", ["x0", "x1", "x2"])
TESTSET = TestSet("fake", TEST_SPLIT)


def _fit(selection: Split, extra: list[dict] | None = None, upstream: list[dict] | None = None) -> dict:
    reads = [split_read(TRAINING, TRAIN, TESTSET, "fake"), split_read(SELECTION, selection, TESTSET, "fake"),
             *(extra or [])]
    return node("fit", "fit of M", TESTSET, reads, upstream or [])


def _test(*upstream: dict, reads: list[dict] | None = None) -> dict:
    return node("test", "test of M", TESTSET, [split_read(TEST, TEST_SPLIT, TESTSET, "fake"), *(reads or [])],
                list(upstream))


def test_ids_digest_ignores_order() -> None:
    assert ids_sha256(["b", "a"]) == ids_sha256(["a", "b"]) != ids_sha256(["a"])


def test_a_clean_chain_says_none() -> None:
    leaks, unverified = leakage_verdict(_test(_fit(VAL)))
    assert leaks == [] and unverified == []
    assert verdict_text(leaks, unverified) == "none"


def test_selection_on_the_test_split() -> None:
    val_is_test = Split("val", TEST_SPLIT.videos, TEST_SPLIT.texts, TEST_SPLIT.protocol)
    leaks, _ = leakage_verdict(_test(_fit(val_is_test)))
    assert leaks == ["test of M <- fit of M: model selection read 3 test videos and 6 test texts [fake/val]"]


def test_training_on_test_videos() -> None:
    polluted = _split("train", ["t0", "x1"])
    fit = node("fit", "fit of M", TESTSET, [split_read(TRAINING, polluted, TESTSET, "fake")])
    (leak,) = leakage_verdict(_test(fit))[0]
    assert "training read 1 test video and 2 test texts" in leak


def test_supplements_written_from_test_queries_and_read_at_test() -> None:
    # records of the test videos whose {text} was a test query (by id), and one older record without an id whose
    # text equals a test query (by string)
    reads = [read_record(CAPTIONED_VIDEOS, "fake", "test", ["x0", "x1", "x2"], [], TESTSET),
             read_record(PROMPT_TEXTS, "fake", "test", [], ["x0#0", "x1#0"], TESTSET, texts=["text 0 of x2"])]
    (leak,) = leakage_verdict(_test(_fit(VAL), reads=reads))[0]
    assert leak.startswith("test of M: prompt texts read 3 test texts")
    # writing such records is informational; captioning test videos from the video alone is no leak either
    store = node("captions", "s.jsonl", TESTSET,
                 [read_record(CAPTIONED_VIDEOS, "fake", "all", ["x0", "t0"], [], TESTSET),
                  read_record(PROMPT_TEXTS_WRITTEN, "fake", "all", [], ["x0#0"], TESTSET)])
    assert leakage_verdict(_test(_fit(VAL, upstream=[store]))) == ([], [])


def test_a_view_scoped_read_says_its_view() -> None:
    pairing = read_record(GROUND_TRUTH, "fake", "test", ["x0", "x1", "x2"], [t.text_id for t in TEST_SPLIT.texts],
                          TESTSET)
    pairing["scope"] = "paired/*"
    (leak,) = leakage_verdict(_test(_fit(VAL), reads=[pairing]))[0]
    assert leak.startswith("view paired/* only: test of M: ground-truth pairing read 3 test videos and 6 test texts")


def test_a_bank_overlapping_the_test_queries() -> None:
    bank = read_record(QUERY_BANK, "fake", "train", ["t0", "x0"], ["t0#0", "x0#1"], TESTSET)
    (leak,) = leakage_verdict(_test(_fit(VAL), reads=[bank]))[0]
    assert "query bank read 1 test video and 1 test text" in leak


def test_a_preference_scorer_selected_on_test_taints_everything_downstream() -> None:
    val_is_test = Split("val", TEST_SPLIT.videos, TEST_SPLIT.texts, TEST_SPLIT.protocol)
    scorer = _fit(val_is_test)
    scorer["name"] = "fit of the scorer"
    preferences = node("preferences", "prefs.jsonl", TESTSET,
                       [read_record(PREFERENCE_LABELS, "fake", "train", ["t0", "t1"], [], TESTSET)], [scorer])
    captioner = node("fit", "fit of the DG-DPO captioner", TESTSET, [split_read(TRAINING, TRAIN, TESTSET, "fake")],
                     [preferences])
    captions = node("captions", "dgdpo.jsonl", TESTSET,
                    [read_record(CAPTIONED_VIDEOS, "fake", "all", ["t0", "x0"], [], TESTSET)], [captioner])
    retriever = _fit(VAL, upstream=[captions])
    (leak,) = leakage_verdict(_test(retriever))[0]
    assert leak.startswith("test of M <- fit of M <- dgdpo.jsonl <- fit of the DG-DPO captioner <- prefs.jsonl <- "
                           "fit of the scorer: model selection read 3 test videos")


def test_a_prompt_chosen_on_test_pairs() -> None:
    csi = node("csi", "best_prompt.txt", TESTSET, [read_record(PROBE_SET, "fake", "test", ["x0"], ["x0#0"], TESTSET)])
    captions = node("captions", "multi.jsonl", TESTSET,
                    [read_record(CAPTIONED_VIDEOS, "fake", "all", ["x0"], [], TESTSET)], [csi])
    (leak,) = leakage_verdict(_test(_fit(VAL, upstream=[captions])))[0]
    assert "probe set read 1 test video and 1 test text" in leak


def test_reads_checked_against_another_test_split_are_unverified_never_clean() -> None:
    other = TestSet("fake", _split("test", ["y0"]))
    fit = node("fit", "fit of M", other, [split_read(TRAINING, TRAIN, other, "fake")])
    leaks, unverified = leakage_verdict(_test(fit))
    assert leaks == [] and len(unverified) == 1 and "not this run's test split" in unverified[0]
    missing = node("test", "test of M", TESTSET, [], [], ["checkpoint a.ckpt has no lineage record"])
    assert leakage_verdict(missing) == ([], ["test of M: checkpoint a.ckpt has no lineage record"])
    assert verdict_text([], ["x"]) == "none (unverified: x)"


def test_sidecars_round_trip_atomically_and_bad_ones_name_the_file(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    assert read_sidecar(store) is None
    lineage = _fit(VAL)
    path = write_sidecar(store, lineage)
    assert path.name == "s.jsonl.lineage.json" and read_sidecar(store) == lineage
    assert [p.name for p in tmp_path.iterdir()] == ["s.jsonl.lineage.json"]  # no temporary file left
    path.write_text("{")
    with pytest.raises(ValueError, match=r"s\.jsonl\.lineage\.json"):
        read_sidecar(store)
    path.write_text("[1]")
    with pytest.raises(ValueError, match="not a lineage node"):
        read_sidecar(store)

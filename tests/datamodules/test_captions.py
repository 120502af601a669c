"""Auxiliary caption store: the JSONL format, its error cases, and captions riding in VideoBatch.aux."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from datamodules import MSVD, CaptionStore, DiDeMo
from datamodules.captions import CAPTIONER_CONFIGS, KINDS, MissingCaptionsError
from tests.datamodule_helpers import SMALL, CopyOf
from tests.fake_datasets import make_fake_msvd
from tests.malformed_inputs import (
    caption_store_bytes,
    is_clear_error,
    mutated_jsonl,
)
from tests.run_helpers import REPO


def record(video_id: str, kind: str, captions: list[str], **extra: object) -> dict:
    return {"video_id": video_id, "kind": kind, "prompt": "describe", "captions": captions, "model": "sim",
            "created": "2026-01-01T00:00:00", **extra}


def write_jsonl(path: Path, rows: list[dict], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_load_filters_kind_and_keeps_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "caps.jsonl", [
        record("v1", "multi", ["a", "b"]), record("v1", "supplement", ["long text"]),
        record("v2", "narration", ["f0", "f1"], frame_indices=[0, 5])])
    multi = CaptionStore.load(path, "multi")
    assert set(multi) == {"v1"} and multi["v1"].captions == ["a", "b"] and multi["v1"].model == "sim"
    assert CaptionStore.load(path, "narration")["v2"].frame_indices == [0, 5]
    assert len(CaptionStore.read_all(path)) == 3


def test_torn_last_line_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "caps.jsonl", [record("v1", "multi", ["a"])], tail='{"video_id": "v2", "ki')
    with caplog.at_level(logging.WARNING):
        store = CaptionStore.load(path, "multi")
    assert set(store) == {"v1"}
    assert "torn last line" in caplog.text and "caps.jsonl:2" in caplog.text


def test_malformed_line_elsewhere_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "caps.jsonl"
    path.write_text(json.dumps(record("v1", "multi", ["a"])) + "\n{not json}\n" +
                    json.dumps(record("v2", "multi", ["b"])) + "\n")
    with pytest.raises(ValueError, match=r"caps\.jsonl:2: malformed JSON line"):
        CaptionStore.load(path, "multi")


@pytest.mark.parametrize(("rows", "message"), [
    ([record("v1", "multi", ["a"]), record("v1", "multi", ["b"])], r"caps\.jsonl:2: second 'multi' record for video"),
    ([record("v1", "narration", ["a", "b"], frame_indices=[0])], "has 2 captions but 1 frame_indices"),
    ([record("v1", "poem", ["a"])], "unknown kind 'poem'"),
    ([record("v1", "multi", ["a", " "])], "empty caption in the record of video 'v1'"),
    ([{"video_id": "v1", "kind": "multi"}], "record lacks 'captions'"),
])
def test_invalid_records(tmp_path: Path, rows: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CaptionStore.load(write_jsonl(tmp_path / "caps.jsonl", rows), "multi")


def test_require_names_file_count_ids_and_command(tmp_path: Path) -> None:
    store = CaptionStore.load(write_jsonl(tmp_path / "caps.jsonl", [record("v1", "multi", ["a"])]), "multi")
    with pytest.raises(MissingCaptionsError) as info:
        store.require(["v1", "v2", "v3"])
    text = str(info.value)
    assert "caps.jsonl: 2 of 3 videos have no 'multi' captions (first: ['v2', 'v3'])" in text
    assert "python main.py predict --config configs/captioners/multi_gpt4o.yaml" in text


def test_the_named_generators_are_shipped_configs() -> None:
    captioners = REPO / "configs" / "captioners"
    for kind, names in CAPTIONER_CONFIGS.items():
        for name in names:
            assert (captioners / name).is_file(), (kind, name)


def test_missing_file_names_the_generator(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"auxiliary caption file not found: .*nope\.jsonl.*main\.py predict "
                                                 r"--config configs/captioners/multi_gpt4o\.yaml"):
        CaptionStore.load(tmp_path / "nope.jsonl", "multi")


@pytest.fixture()
def msvd_with_aux(tmp_path: Path) -> Path:
    make_fake_msvd(tmp_path)
    ids = [line for f in ("train", "val", "test") for line in (tmp_path / f"{f}_list.txt").read_text().split()]
    # the fake clips have 16 frames; 4 uniform frames are 2, 6, 10, 14; narration covers every even frame
    write_jsonl(tmp_path / "aux" / "multi.jsonl",
                [record(v, "multi", [f"{v} view {k}" for k in range(3)]) for v in ids])
    even = list(range(0, 16, 2))
    write_jsonl(tmp_path / "aux" / "narration.jsonl",
                [record(v, "narration", [f"{v} frame {i}" for i in even], frame_indices=even) for v in ids])
    return tmp_path


def test_batches_carry_aux_captions_aligned_to_frames(msvd_with_aux: Path) -> None:
    dm = MSVD(root=str(msvd_with_aux), num_frames=4, image_size=32, num_workers=0, eval_batch_size=2,
              aux_captions={"multi": "aux/multi.jsonl", "narration": str(msvd_with_aux / "aux" / "narration.jsonl")})
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()[1]))
    assert batch.video_ids == ["clip06_42_47", "clip07_49_54"]
    assert batch.aux["multi"].captions == [[f"{v} view {k}" for k in range(3)] for v in batch.video_ids]
    assert batch.aux["narration"].captions[0] == [f"clip06_42_47 frame {i}" for i in (2, 6, 10, 14)]
    assert dm.describe("test")["aux_captions"]["multi"].endswith("aux/multi.jsonl")


def test_narration_that_does_not_match_the_fed_frames_is_an_error(msvd_with_aux: Path) -> None:
    dm = MSVD(root=str(msvd_with_aux), num_frames=3, image_size=32, num_workers=0,
              aux_captions={"narration": "aux/narration.jsonl"})
    dm.setup("test")  # 3 uniform frames of 16 are 2, 8, 13: 13 was not narrated
    with pytest.raises(ValueError, match=r"narration of video 'clip06_42_47' covers frames .* but frames \[2, 8, 13\]"):
        next(iter(dm.test_dataloader()[1]))
    nearest = MSVD(root=str(msvd_with_aux), num_frames=3, image_size=32, num_workers=0,
                   aux_captions={"narration": "aux/narration.jsonl"}, narration_match="nearest")
    nearest.setup("fit")  # random offsets at train time take the nearest narrated frame
    batch = next(iter(nearest.train_dataloader()))
    assert all(len(n) == 3 for n in batch.video.aux["narration"].captions)


def test_random_offset_training_with_exactly_matched_narration_fails_at_setup(msvd_with_aux: Path) -> None:
    settings = {"root": str(msvd_with_aux), "num_frames": 4, "image_size": 32, "num_workers": 0,
                "aux_captions": {"narration": "aux/narration.jsonl"}}
    with pytest.raises(ValueError, match=r"narration\.jsonl \(data\.init_args\.aux_captions\.narration\) records the "
                                         r"frame_indices .*train_sampling: random_offset.*narration_match: exact.*"
                                         r"train_sampling: uniform .*narration_match: nearest"):
        MSVD(**settings).setup("fit")  # random_offset and exact are the defaults
    MSVD(**settings, train_sampling="uniform").setup("fit")
    MSVD(**settings, narration_match="nearest").setup("fit")
    MSVD(**settings).setup("test")  # evaluation samples uniformly: nothing to refuse


def test_narration_without_indices_needs_one_caption_per_frame(msvd_with_aux: Path) -> None:
    ids = (msvd_with_aux / "test_list.txt").read_text().split()
    write_jsonl(msvd_with_aux / "aux" / "narr2.jsonl", [record(v, "narration", ["x", "y"]) for v in ids])
    dm = MSVD(root=str(msvd_with_aux), num_frames=4, image_size=32, num_workers=0,
              aux_captions={"narration": "aux/narr2.jsonl"})
    dm.setup("test")
    with pytest.raises(ValueError, match="has 2 captions but 4 frames are fed and the record has no frame_indices"):
        next(iter(dm.test_dataloader()[1]))


def test_datamodule_refuses_a_split_with_missing_aux_ids(msvd_with_aux: Path) -> None:
    path = msvd_with_aux / "aux" / "multi.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if "clip07" not in line) + "\n")
    dm = MSVD(root=str(msvd_with_aux), num_frames=4, image_size=32, num_workers=0,
              aux_captions={"multi": "aux/multi.jsonl"})
    with pytest.raises(MissingCaptionsError, match=r"multi\.jsonl: 1 of 3 videos have no 'multi' captions "
                                                    r"\(first: \['clip07_49_54'\]\)"):
        dm.setup("test")


@pytest.mark.parametrize(("line", "message"), [
    ('{"video_id": "v", "kind": "multi", "captions": ["a"], "model": null}', r"'model' must be a string, got NoneType"),
    ('{"video_id": "v", "kind": "multi", "captions": ["a"], "prompt": 5}', r"'prompt' must be a string, got int"),
    ('{"video_id": "v", "kind": "narration", "captions": ["a"], "frame_indices": [true]}',
     r"'frame_indices' must be a list of integers"),
    ('{"video_id": "v", "kind": "multi", "captions": ["a"], "captions": ["b"]}', r"key 'captions' appears twice"),
    ('{"video_id": "v", "kind": "multi", "captions": ["\\udc80"]}', r"captions\[0\] holds a lone UTF-16 surrogate"),
])
def test_fields_are_typed_not_coerced(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "caps.jsonl"
    path.write_text(line + "\n" + json.dumps(record("w", "multi", ["b"])) + "\n")
    with pytest.raises(ValueError, match=r"caps\.jsonl:1: .*" + message):
        CaptionStore.load(path, "multi")


@given(data=st.data())
def test_generated_malformed_stores_fail_clearly_or_load_typed_records(data: st.DataObject) -> None:
    """A store with one drawn mutation (a field of any JSON type, a doubled key, a repeated record, a cut anywhere,
    bad UTF-8, inserted bytes) either raises one of the suite's errors naming the file, or loads records whose every
    field has its declared type; reading never changes the file."""
    mutated = data.draw(mutated_jsonl(caption_store_bytes()), label="store")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "caps.jsonl"
        path.write_bytes(mutated)
        for kind in KINDS:
            try:
                store = CaptionStore.load(path, kind)
            except Exception as exc:
                assert is_clear_error(exc, "caps.jsonl"), f"{type(exc).__name__}: {exc}"
                continue
            for video_id, rec in store.items():
                assert video_id == rec.video_id and rec.kind == kind
                assert rec.captions and all(isinstance(c, str) and c.strip() for c in rec.captions)
                assert all(isinstance(v, str) for v in (rec.prompt, rec.model, rec.created))
                assert rec.frame_indices is None or all(type(i) is int for i in rec.frame_indices)
        assert path.read_bytes() == mutated


def test_missing_aux_caption_id(copy_of: CopyOf) -> None:
    root = copy_of("didemo")
    first = (root / "test_list.txt").read_text().split()[0]
    (root / "supp.jsonl").write_text(json.dumps({"video_id": first, "kind": "supplement", "prompt": "p",
                                                 "captions": ["long"], "model": "m", "created": "t"}) + "\n")
    with pytest.raises(MissingCaptionsError, match=r"supp\.jsonl: 2 of 3 videos have no 'supplement' captions "
                                                   r"\(first: \[.*\]\)\. Generate them with: python main\.py predict "
                                                   r"--config configs/captioners/supplement_a\.yaml"):
        DiDeMo(root=str(root), aux_captions={"supplement": "supp.jsonl"}, **SMALL).setup("test")

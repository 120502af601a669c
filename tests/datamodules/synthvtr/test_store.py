"""A generated SynthVTR on disk: MSR-VTT layout, determinism, idempotence, crash safety."""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from datamodules.synthvtr import (
    ANNOTATION_FILES,
    GENERATOR_VERSION,
    SynthVTRConfig,
    build_synthvtr,
    generate_synthvtr,
    is_complete,
)
from datamodules.synthvtr import render as render_module
from tests.datamodules.synthvtr.conftest import N_TEST, N_VIDEOS, TINY


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_layout_and_counts(tiny_root: Path):
    root = tiny_root
    for rel in (*ANNOTATION_FILES, "synthvtr/generation.json"):
        assert (root / rel).is_file(), rel
    assert not (root / "synthvtr" / "in_progress.json").exists()
    assert not list(root.rglob("*.tmp"))
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert {"videos", "sentences"} <= set(data)
    videos = data["videos"]
    assert len(videos) == N_VIDEOS
    for k, v in enumerate(videos):
        assert set(v) == {"video_id", "url", "category", "split", "id", "start time", "end time"}
        assert v["video_id"] == f"synth{k:05d}" and v["id"] == k
        assert v["url"].startswith("synthvtr://family/") and v["end time"] == TINY.num_frames / TINY.fps
    sentences = data["sentences"]
    assert len(sentences) == N_VIDEOS * TINY.captions_per_video
    assert all(set(s) == {"caption", "video_id", "sen_id"} for s in sentences)
    assert [s["sen_id"] for s in sentences] == list(range(len(sentences)))

    split = {v["video_id"]: v["split"] for v in videos}
    family_splits = defaultdict(set)
    for v in videos:
        family_splits[v["url"]].add(v["split"])
    assert all(len(s) == 1 for s in family_splits.values()), "split must be by family"
    train_ids = [k for k, s in split.items() if s == "train"]
    test_ids = [k for k, s in split.items() if s == "test"]
    assert len(test_ids) == N_TEST and len(train_ids) == N_VIDEOS - N_TEST

    header, rows = _read_csv(root / "MSRVTT_train.9k.csv")
    assert header == ["video_id"] and [r["video_id"] for r in rows] == train_ids
    header, rows = _read_csv(root / "MSRVTT_JSFUSION_test.csv")
    assert header == ["key", "vid_key", "video_id", "sentence"]
    assert [r["video_id"] for r in rows] == test_ids
    first = {}
    for s in sentences:
        first.setdefault(s["video_id"], s["caption"])
    assert all(r["sentence"] == first[r["video_id"]] for r in rows)

    mp4s = sorted(p.name for p in (root / "videos").iterdir())
    assert mp4s == [f"synth{k:05d}.mp4" for k in range(N_VIDEOS)]
    gen = json.loads((root / "synthvtr" / "generation.json").read_text())
    assert gen["fingerprint"] == TINY.fingerprint() and gen["generator_version"] == GENERATOR_VERSION
    assert gen["counts"]["videos"] == N_VIDEOS and gen["timings"]["videos_rendered"] == N_VIDEOS


def test_deterministic_and_seed_dependent(tiny_root: Path, tmp_path: Path):
    other = generate_synthvtr(tmp_path / "b", TINY, workers=2, progress=False)  # pooled this time
    for rel in ("MSRVTT_data.json", "synthvtr/frames.jsonl", "synthvtr/captions.jsonl",
                "synthvtr/specs.jsonl", "MSRVTT_JSFUSION_test.csv", "synthvtr/oracle.json"):
        assert (tiny_root / rel).read_bytes() == (other / rel).read_bytes(), rel
    decord = pytest.importorskip("decord")
    for vid in ("synth00003", "synth00017"):
        a = decord.VideoReader(str(tiny_root / "videos" / f"{vid}.mp4")).get_batch([0, 7, 15]).asnumpy()
        b = decord.VideoReader(str(other / "videos" / f"{vid}.mp4")).get_batch([0, 7, 15]).asnumpy()
        assert np.array_equal(a, b)

    seeded = SynthVTRConfig(**{**TINY.__dict__, "seed": 1})
    assert seeded.fingerprint() != TINY.fingerprint()
    third = generate_synthvtr(tmp_path / "c", seeded, workers=1, progress=False)
    for rel in ("MSRVTT_data.json", "synthvtr/frames.jsonl"):
        assert (tiny_root / rel).read_bytes() != (third / rel).read_bytes(), rel

    # Semantics do not depend on the resolution or the encoder: text features can be reused.
    small = build_synthvtr(SynthVTRConfig(**{**TINY.__dict__, "image_size": 32, "crf": 30}))
    tiny = build_synthvtr(TINY)
    assert [c.caption for c in small.captions] == [c.caption for c in tiny.captions]
    assert [s.to_json() for s in small.specs] == [s.to_json() for s in tiny.specs]


def test_idempotent_second_call_is_fast_and_rewrites_nothing(tiny_root: Path):
    root = tiny_root
    watched = [root / "MSRVTT_data.json", root / "synthvtr" / "generation.json",
               root / "videos" / "synth00005.mp4"]
    before = [p.stat().st_mtime_ns for p in watched]
    t0 = time.perf_counter()
    assert generate_synthvtr(root, TINY, workers=2, progress=False) == root
    assert time.perf_counter() - t0 < 1.0
    assert [p.stat().st_mtime_ns for p in watched] == before
    assert is_complete(root, TINY)
    assert not is_complete(root, SynthVTRConfig(**{**TINY.__dict__, "detail": 3}))


def test_crash_midway_never_looks_complete_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = SynthVTRConfig(num_families=3, family_size=2, test_families=1, image_size=32, num_frames=8)
    real = render_module.render_videos
    calls = []

    def flaky(specs, video_dir, config):
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        calls.append(specs)
        return real(specs, video_dir, config)

    monkeypatch.setattr(render_module, "render_videos", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_synthvtr(tmp_path, cfg, workers=1, progress=False)
    assert not (tmp_path / "synthvtr" / "generation.json").exists()
    assert not is_complete(tmp_path, cfg)
    monkeypatch.setattr(render_module, "render_videos", real)
    generate_synthvtr(tmp_path, cfg, workers=1, progress=False)
    assert is_complete(tmp_path, cfg)
    timings = json.loads((tmp_path / "synthvtr" / "generation.json").read_text())["timings"]
    assert timings["resumed"] and timings["videos_rendered"] == cfg.num_videos - 3


def test_manifest_lists_every_file_and_names_the_copy(tiny_root: Path):
    import hashlib

    from datamodules.synthvtr import MANIFEST, content_files, verify_content

    text = (tiny_root / MANIFEST).read_text()
    rows = [line.split("  ", 1) for line in text.splitlines()]
    assert [rel for _, rel in rows] == content_files(TINY) == sorted(content_files(TINY))
    assert len(rows) == len(ANNOTATION_FILES) + N_VIDEOS
    for digest, rel in rows:  # sha256sum's format: `cd <root> && sha256sum -c synthvtr/manifest.sha256` checks it
        assert hashlib.sha256((tiny_root / rel).read_bytes()).hexdigest() == digest, rel
    gen = json.loads((tiny_root / "synthvtr" / "generation.json").read_text())
    assert gen["content_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert gen["encoder"]["x264_params"].startswith("cpu-independent=1") and gen["encoder"]["x264"].startswith("x264")
    check = verify_content(tiny_root)
    assert check.ok and check.files == len(rows)
    assert check.record() == {"content_sha256": gen["content_sha256"], "content_verified": True,
                              "content_mismatch": {"files": len(rows), "differ": 0, "missing": 0, "extra": 0}}


def test_a_copy_that_differs_from_its_manifest_gives_one_warning_with_counts(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture):
    import shutil

    from datamodules.synthvtr import MANIFEST, verify_content

    cfg = SynthVTRConfig(num_families=3, family_size=2, test_families=1, image_size=32, num_frames=8)
    root = generate_synthvtr(tmp_path / "copy", cfg, workers=1, progress=False)
    for vid in ("synth00001", "synth00004"):
        path = root / "videos" / f"{vid}.mp4"
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # same size, other bytes
    (root / "videos" / "synth00002.mp4").unlink()
    shutil.copy(root / "videos" / "synth00000.mp4", root / "videos" / "synth00099.mp4")
    caplog.clear()
    with caplog.at_level("WARNING", logger="datamodules.synthvtr.store"):
        check = verify_content(root)
    assert not check.ok
    assert (check.differ, check.missing, check.extra) == (
        ["videos/synth00001.mp4", "videos/synth00004.mp4"], ["videos/synth00002.mp4"], ["videos/synth00099.mp4"])
    assert check.record()["content_mismatch"] == {"files": 14, "differ": 2, "missing": 1, "extra": 1}
    assert check.record()["content_verified"] is False
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # one warning for the copy, not one per file
    message = warnings[0].getMessage()
    assert str(root / MANIFEST) in message and "of 14 files, 2 differ" in message and "1 missing" in message
    assert "1 not listed" in message and "--force" in message

    (root / MANIFEST).write_text("not a manifest line\n")
    with pytest.raises(ValueError, match=r"manifest.sha256:1: expected"):
        verify_content(root)
    (root / MANIFEST).unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="datamodules.synthvtr.store"):
        check = verify_content(root)
    assert check.content_sha256 is None and not check.ok and "has no manifest" in caplog.records[0].getMessage()
    assert not is_complete(root, cfg)  # no manifest: generate_synthvtr makes the copy again


def test_the_data_module_checks_its_copy_once(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from datamodules.synthvtr.datamodule import SynthVTR

    def data() -> SynthVTR:
        return SynthVTR(root=str(tmp_path), num_families=3, family_size=2, test_families=1, val_families=1,
                        video_size=32, video_frames=8, generator_workers=1)

    first = data()
    first.prepare_data()
    assert first.content_check().ok
    video = next(first.root.glob("videos/*.mp4"))
    video.write_bytes(video.read_bytes() + b"\x00")
    second = data()
    caplog.clear()
    with caplog.at_level("WARNING", logger="datamodules.synthvtr.store"):
        second.prepare_data()  # complete (fingerprint, files present): not regenerated, but checked
        record = second.content_check().record()
        second.content_check()
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert record["content_mismatch"]["differ"] == 1 and record["content_verified"] is False

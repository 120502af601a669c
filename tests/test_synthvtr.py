"""SynthVTR generator: layout, counts, facts, families, determinism, idempotence, pixels, oracle.

One tiny benchmark (6 families of 4, 2 test families, 64 px, 16 frames) is generated once per module;
the whole file runs in a few seconds on two cores.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from datamodules import synthvtr as sv
from datamodules.synthvtr import (
    SynthVTRConfig,
    build_synthvtr,
    generate_synthvtr,
    is_complete,
    load_caption_facts,
    load_frame_metadata,
    load_video_facts,
    oracle_recall,
)

TINY = SynthVTRConfig(num_families=6, family_size=4, test_families=2, image_size=64, num_frames=16)
N_VIDEOS, N_TEST = 24, 8


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthvtr(tmp_path_factory.mktemp("synth") / "a", TINY, workers=1, progress=False)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _specs(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "synthvtr" / "specs.jsonl").read_text().splitlines()]


def test_layout_and_counts(root: Path):
    for rel in (*sv.ANNOTATION_FILES, "synthvtr/generation.json"):
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
    assert gen["fingerprint"] == TINY.fingerprint() and gen["generator_version"] == sv.GENERATOR_VERSION
    assert gen["counts"]["videos"] == N_VIDEOS and gen["timings"]["videos_rendered"] == N_VIDEOS


def test_captions_are_consistent_with_their_video(root: Path):
    captions, facts = load_caption_facts(root), load_video_facts(root)
    assert len(captions) == N_VIDEOS * TINY.captions_per_video and len(facts) == N_VIDEOS
    per_video = defaultdict(int)
    for c in captions:
        per_video[c.video_id] += 1
        assert c.facts and c.facts <= facts[c.video_id], (c.caption, sorted(c.facts - facts[c.video_id]))
        assert c.caption == c.caption.lower() and "," not in c.caption and c.caption.strip() == c.caption
    assert set(per_video.values()) == {TINY.captions_per_video}


def test_mutants_differ_from_base_in_exactly_one_attribute(root: Path):
    def attributes(spec: dict) -> dict[str, object]:
        out: dict[str, object] = {"background": spec["background"], "n_objects": len(spec["objects"]),
                                  "event_type": spec["event"]["kind"], "event_to": spec["event"]["to_colour"],
                                  "event_obj": spec["event"]["obj"]}
        for i, o in enumerate(spec["objects"]):
            out.update({f"colour{i}": o["colour"], f"shape{i}": o["shape"], f"motion{i}": o["motion"]})
        return out

    families = defaultdict(list)
    keys = set()
    for spec in _specs(root):
        families[spec["family"]].append(spec)
        objs = sorted((o["colour"], o["shape"], o["motion"], i == spec["event"]["obj"])
                      for i, o in enumerate(spec["objects"]))
        keys.add(json.dumps([spec["background"], objs, spec["event"]["kind"], spec["event"]["to_colour"]]))
    assert len(keys) == N_VIDEOS, "every spec must be globally unique"
    assert len(families) == TINY.num_families
    for members in families.values():
        assert [m["member"] for m in members] == list(range(TINY.family_size))
        base = attributes(members[0])
        assert members[0]["mutation"] is None
        for m in members[1:]:
            diff = {k for k, v in attributes(m).items() if base[k] != v}
            if m["mutation"] == "event_type":  # a change event carries its colour; the others none
                diff.discard("event_to")
            assert len(diff) == 1, (m["mutation"], diff)
            (what,) = diff
            assert what.rstrip("0123456789") == m["mutation"]
            assert [o["anchor"] for o in m["objects"]] == [o["anchor"] for o in members[0]["objects"]] or (
                m["mutation"] == "motion")


def test_frame_metadata(root: Path):
    frames = load_frame_metadata(root)
    specs = {s["video_id"]: s for s in _specs(root)}
    assert set(frames) == set(specs)
    for vid, per_frame in frames.items():
        spec = specs[vid]
        assert len(per_frame) == TINY.num_frames
        counts = []
        for f, fr in enumerate(per_frame):
            assert fr["frame"] == f and fr["background"] == spec["background"]
            counts.append(len(fr["objects"]))
            for o in fr["objects"]:
                assert set(o) == {"colour", "shape", "x", "y", "r", "pos", "motion"}
                assert o["r"] <= o["x"] <= 1 - o["r"] and o["r"] <= o["y"] <= 1 - o["r"]
                assert o["pos"] == sv.position_word(o["x"], o["y"])
                assert not (o["shape"] == "circle" and o["motion"] == "spin")
        n, kind = len(spec["objects"]), spec["event"]["kind"]
        expected = {"appear": (n - 1, n), "disappear": (n, n - 1), "change": (n, n)}[kind]
        assert (counts[0], counts[-1]) == expected
        if kind == "change":
            target = spec["objects"][spec["event"]["obj"]]
            last = {(o["colour"], o["shape"]) for o in per_frame[-1]["objects"]}
            assert (spec["event"]["to_colour"], target["shape"]) in last


def test_videos_decode_with_right_size_and_red_where_metadata_says(root: Path):
    decord = pytest.importorskip("decord")
    for vid in ("synth00000", f"synth{N_VIDEOS - 1:05d}"):
        vr = decord.VideoReader(str(root / "videos" / f"{vid}.mp4"))
        assert len(vr) == TINY.num_frames
        assert vr[0].asnumpy().shape == (TINY.image_size, TINY.image_size, 3)

    # A frame with exactly one red object, as large as possible.
    frames = load_frame_metadata(root)
    candidates = [(o["r"], vid, f, o) for vid, per_frame in frames.items() for f, fr in enumerate(per_frame)
                  for o in fr["objects"] if [p["colour"] for p in fr["objects"]].count("red") == 1
                  and o["colour"] == "red"]
    video_path = None
    if candidates:
        _, vid, f, obj = max(candidates, key=lambda c: c[0])
        video_path = root / "videos" / f"{vid}.mp4"
    else:  # seed-proof fallback: a hand-made spec with one red square
        spec = sv.VideoSpec("synth99999", 0, 0, 0, "test", "grass",
                            (sv.ObjectSpec("red", "square", "static", (0.3, 0.6)),),
                            sv.EventSpec("change", 0, 0.9, "blue"), render_seed=1)
        video_path = root.parent / "red.mp4"
        sv.write_mp4(sv.render_frames(spec, TINY), video_path, TINY.fps)
        f, obj = 0, sv.frame_metadata(spec, TINY)[0]["objects"][0]
    img = decord.VideoReader(str(video_path))[f].asnumpy().astype(int)
    red = (img[..., 0] > 140) & (img[..., 1] < 90) & (img[..., 2] < 90)
    s = TINY.image_size
    cx, cy, rad = obj["x"] * s, obj["y"] * s, obj["r"] * s
    yy, xx = np.mgrid[0:s, 0:s]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (0.5 * rad) ** 2
    assert red[inside].mean() > 0.6
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - cx) < 0.5 * rad + 1 and abs(ys.mean() - cy) < 0.5 * rad + 1


def test_deterministic_and_seed_dependent(root: Path, tmp_path: Path):
    other = generate_synthvtr(tmp_path / "b", TINY, workers=2, progress=False)  # pooled this time
    for rel in ("MSRVTT_data.json", "synthvtr/frames.jsonl", "synthvtr/captions.jsonl",
                "synthvtr/specs.jsonl", "MSRVTT_JSFUSION_test.csv", "synthvtr/oracle.json"):
        assert (root / rel).read_bytes() == (other / rel).read_bytes(), rel
    decord = pytest.importorskip("decord")
    for vid in ("synth00003", "synth00017"):
        a = decord.VideoReader(str(root / "videos" / f"{vid}.mp4")).get_batch([0, 7, 15]).asnumpy()
        b = decord.VideoReader(str(other / "videos" / f"{vid}.mp4")).get_batch([0, 7, 15]).asnumpy()
        assert np.array_equal(a, b)

    seeded = SynthVTRConfig(**{**TINY.__dict__, "seed": 1})
    assert seeded.fingerprint() != TINY.fingerprint()
    third = generate_synthvtr(tmp_path / "c", seeded, workers=1, progress=False)
    for rel in ("MSRVTT_data.json", "synthvtr/frames.jsonl"):
        assert (root / rel).read_bytes() != (third / rel).read_bytes(), rel

    # Semantics do not depend on the resolution or the encoder: text features can be reused.
    small = build_synthvtr(SynthVTRConfig(**{**TINY.__dict__, "image_size": 32, "crf": 30}))
    tiny = build_synthvtr(TINY)
    assert [c.caption for c in small.captions] == [c.caption for c in tiny.captions]
    assert [s.to_json() for s in small.specs] == [s.to_json() for s in tiny.specs]


def test_idempotent_second_call_is_fast_and_rewrites_nothing(root: Path):
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
    real = sv._render_chunk
    calls = []

    def flaky(specs, video_dir, config):
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        calls.append(specs)
        return real(specs, video_dir, config)

    monkeypatch.setattr(sv, "_render_chunk", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_synthvtr(tmp_path, cfg, workers=1, progress=False)
    assert not (tmp_path / "synthvtr" / "generation.json").exists()
    assert not is_complete(tmp_path, cfg)
    monkeypatch.setattr(sv, "_render_chunk", real)
    generate_synthvtr(tmp_path, cfg, workers=1, progress=False)
    assert is_complete(tmp_path, cfg)
    timings = json.loads((tmp_path / "synthvtr" / "generation.json").read_text())["timings"]
    assert timings["resumed"] and timings["videos_rendered"] == cfg.num_videos - 3


def test_render_worker_failure_is_reported(tmp_path: Path):
    cfg = SynthVTRConfig(num_families=3, family_size=4, test_families=1, image_size=32, num_frames=8,
                         preset="no-such-preset")
    with pytest.raises(RuntimeError, match="render worker"):
        generate_synthvtr(tmp_path, cfg, workers=2, progress=False)
    assert not is_complete(tmp_path, cfg)


def test_oracle_recall_hand_made():
    video_facts = {"v1": {"a"}, "v2": {"a", "b"}, "v3": {"a", "b", "c"}, "train": {"a", "b", "c"}}
    captions = [("v1", {"a"}), ("v2", {"a", "b"}), ("v3", {"c"}), ("train", {"a"})]
    out = oracle_recall(captions, video_facts, ["v1", "v2", "v3"], ks=(1, 2, 5))
    # consistent test videos: 3, 2 and 1; the train caption is ignored
    assert out["num_queries"] == 3 and out["num_videos"] == 3
    assert out["R@1"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1) / 3, abs=1e-3)
    assert out["R@2"] == pytest.approx(100 * (2 / 3 + 1 + 1) / 3, abs=1e-3)
    assert out["R@5"] == pytest.approx(100.0)
    assert out["mean_consistent"] == pytest.approx(2.0)
    assert out["unique_pct"] == pytest.approx(100 / 3, abs=1e-3)
    with pytest.raises(ValueError, match="lacks"):
        oracle_recall([("v1", {"b"})], video_facts, ["v1", "v2"])


def test_oracle_file_matches_recomputation(root: Path):
    saved = json.loads((root / "synthvtr" / "oracle.json").read_text())
    test_ids = [v["video_id"] for v in json.loads((root / "MSRVTT_data.json").read_text())["videos"]
                if v["split"] == "test"]
    again = oracle_recall(load_caption_facts(root), load_video_facts(root), test_ids)
    assert {k: saved[k] for k in again} == again
    assert 0 < saved["R@1"] <= saved["R@5"] <= saved["R@10"] <= 100
    assert saved["first_caption"]["num_queries"] == N_TEST


def test_config_validation_and_fingerprint():
    assert SynthVTRConfig().fingerprint() == SynthVTRConfig().fingerprint()
    assert SynthVTRConfig(mutations=["colour", "shape"]).mutations == ("colour", "shape")  # type: ignore[arg-type]
    assert SynthVTRConfig(detail=3).fingerprint() != SynthVTRConfig().fingerprint()
    for bad in ({"image_size": 63}, {"detail": 0}, {"test_families": 300}, {"mutations": ("nope",)},
                {"max_objects": 5}, {"event_window": (0.7, 0.2)}):
        with pytest.raises(ValueError):
            SynthVTRConfig(**bad)  # type: ignore[arg-type]


def test_detail_raises_the_ceiling():
    r1 = [build_synthvtr(SynthVTRConfig(num_families=40, test_families=20, detail=d)).oracle()["R@1"]
          for d in (1, 2, 3)]
    assert r1[0] < r1[1] < r1[2]


def test_cli_specs_only(capsys: pytest.CaptureFixture[str]):
    assert sv.main(["--specs-only", "--num-families", "6", "--test-families", "2",
                    "--mutations", "colour,background"]) == 0
    out = capsys.readouterr().out
    assert "24 videos" in out and "oracle" in out

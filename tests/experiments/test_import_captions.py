"""python -m experiments.prepare import-captions: the authors' NarVid narration files and Cap4Video caption files
converted into the caption store, aligned end to end with the frames the loaders feed, and every error case."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from datamodules import MSRVTT, CaptionStore
from datamodules.datasets import align_narration
from datamodules.readers import sample_frame_indices
from experiments import import_captions, prepare
from experiments.import_captions import CaptionImportError
from tests.conftest import COLOURS, make_fake_msrvtt, write_video
from tests.fake_datasets import make_fake_didemo, make_fake_vatex
from tests.malformed_inputs import caption_record, mutated_json, snapshot, write_annotations
from tests.run_helpers import REPO

FPS = 8  # write_video's frame rate
MAX_FRAMES = 4  # the narration's max_frames in these tests (the authors use 12, 32 for DiDeMo)


def authors_raw_frames(num_frames: int, fps: int = FPS, max_frames: int = MAX_FRAMES) -> list[int]:
    """Raw frames NarVid's extractor saves, written out from its description (README "Reproduce NarVid with the
    authors' narration files"): the decoded frame s * int(fps) of every second s, then linspace(0, n-1, max_frames)
    of them when more."""
    seconds = math.ceil(num_frames / int(fps))
    positions = np.linspace(0, seconds - 1, max_frames, dtype=int) if seconds > max_frames else np.arange(seconds)
    return [int(p) * int(fps) for p in positions]


def narvid_file(path: Path, captions: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps([{"video_file": vid, **{f"caption_{i + 1}": c for i, c in enumerate(caps)}}
                                for vid, caps in captions.items()]))
    return path


def run_import(*args: str | Path) -> dict[str, Any]:
    return import_captions.main([str(a) for a in args])


@pytest.fixture(scope="module")
def narrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Fake MSR-VTT whose videos last 2..7 s, NarVid-extracted frames (1 fps, max 4) and the narration file the
    authors would release for them: caption i names the raw frame of the i-th extracted frame."""
    root = make_fake_msrvtt(tmp_path_factory.mktemp("narvid"), num_train=4, num_test=2, captions_per_video=2)
    lengths = {}
    for i in range(6):
        lengths[f"video{i}"] = FPS * (2 + i) + 3  # not whole seconds: the last second is partial
        write_video(root / "videos" / "all" / f"video{i}.mp4", list(COLOURS.values())[i],
                    num_frames=lengths[f"video{i}"], seed=10 + i)
    manifest = prepare.main(["msrvtt", "--videos", str(root / "videos" / "all"), "--annotations", str(root),
                             "--extract-frames", "--frames-fps", "1", "--frames-sampler", "narvid", "--frames-max",
                             str(MAX_FRAMES), "--short-side", "32", "--check-reader", "none"])
    raw = {vid: authors_raw_frames(n) for vid, n in lengths.items()}
    captions = {vid: [f"{vid} raw frame {f}" for f in frames] for vid, frames in raw.items()}
    return {"root": root, "frames_dir": Path(manifest["frames_dir"]), "raw": raw, "captions": captions,
            "lengths": lengths, "file": narvid_file(root / "MSRVTT_narration.json", captions)}


def test_narvid_extraction_matches_the_authors_frames(narrated: dict[str, Any]) -> None:
    import av
    from PIL import Image

    frames_dir = narrated["frames_dir"]
    assert frames_dir.name == f"frames_1fps_32_max{MAX_FRAMES}_narvid"
    for vid in ("video0", "video5"):  # 3 one-second frames (kept), 8 (subsampled to 4: seconds 0, 2, 4, 7)
        with av.open(str(narrated["root"] / "videos" / "all" / f"{vid}.mp4")) as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)
        files = sorted(frames_dir.joinpath(vid).glob("*.jpg"))
        assert len(files) == len(narrated["raw"][vid])
        nearest = [int(((decoded - np.asarray(Image.open(f), dtype=np.float32)) ** 2).mean((1, 2, 3)).argmin())
                   for f in files]
        assert nearest == narrated["raw"][vid]
    assert narrated["raw"]["video5"] == [0, 16, 32, 56]


def test_narvid_frame_rule_on_fractional_frame_rates() -> None:
    # the authors truncate 29.97 fps to 29: frame 29 * s, not the frame at s seconds
    assert prepare.narvid_frame_filter(29.97, 1) == (29, {0})
    assert prepare.narvid_frame_filter(25.0, 2) == (25, {0, 12})
    with pytest.raises(ValueError, match="integer --frames-fps"):
        prepare.narvid_frame_filter(25.0, 0.5)
    assert prepare.linspace_positions(8, 4).tolist() == [0, 2, 4, 7]
    assert import_captions.video_space_indices(4, 29.97, 600, 29.97, 600) == [0, 174, 377, 580]
    # a 3 fps re-encoded copy of that video: the same instants, in the copy's frames
    assert import_captions.video_space_indices(4, 29.97, 600, 3.0, 60) == [0, 17, 38, 58]


def test_narvid_frames_index_space_end_to_end(narrated: dict[str, Any], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "narration.jsonl"
    summary = run_import("--format", "narvid", "--input", narrated["file"], "--dataset", "msrvtt", "--root",
                         narrated["root"], "--out", out, "--frames-dir", narrated["frames_dir"])
    printed = capsys.readouterr().out
    assert "| train | 4 | 4 | 0 |" in printed and "| test | 2 | 2 | 0 |" in printed
    assert "captions per video: min 3 / mean 3.83 / max 4" in printed and "6 checked, counts agree" in printed
    assert summary["frames_checked"] == 6 and summary["captions_per_video"]["max"] == MAX_FRAMES
    store = CaptionStore.load(out, "narration")
    assert set(store) == set(narrated["captions"])
    record = store["video5"]
    assert record.captions == narrated["captions"]["video5"] and record.frame_indices == [0, 1, 2, 3]
    assert record.model == "narvid-release (LLaVA-1.5-7B)" and record.prompt == import_captions.NARVID_PROMPT

    # the loader on the extracted folders: 3 of 4 frames fed (all 3 of video0), each with its own caption
    dm = MSRVTT(root=str(narrated["root"]), val_protocol="test", video_dir=str(narrated["frames_dir"]), reader="frames",
                num_frames=3,
                image_size=32, batch_size=4, eval_batch_size=3, num_workers=0, train_sampling="uniform",
                aux_captions={"narration": str(out)})
    dm.setup("fit")
    seen = set()
    for batch in [*dm.train_dataloader(), *dm.val_dataloader()[1]]:
        video = getattr(batch, "video", batch)
        for row, vid in enumerate(video.video_ids):
            count = len(narrated["raw"][vid])
            fed = sample_frame_indices(count, 3, "uniform")
            assert video.aux["narration"].captions[row] == [narrated["captions"][vid][i] for i in fed]
            assert int(video.mask[row].sum()) == len(fed)
            seen.add(vid)
    assert seen == set(narrated["captions"])


def test_narvid_video_index_space_end_to_end(narrated: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "narration_video.jsonl"
    summary = run_import("--format", "narvid", "--input", narrated["file"], "--dataset", "msrvtt", "--root",
                         narrated["root"], "--out", out, "--index-space", "video")
    assert summary["timing_from"].endswith("vtr_manifest.json")
    store = CaptionStore.load(out, "narration")
    assert {vid: r.frame_indices for vid, r in store.items()} == narrated["raw"]

    dm = MSRVTT(root=str(narrated["root"]), val_videos=1, video_dir="videos/all", reader="pyav", num_frames=4,
                image_size=32,
                batch_size=4, eval_batch_size=3, num_workers=0, train_sampling="uniform",
                aux_captions={"narration": str(out)}, narration_match="nearest")
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()[1]))
    for row, vid in enumerate(batch.video_ids):
        raw = np.asarray(narrated["raw"][vid])
        fed = sample_frame_indices(narrated["lengths"][vid], 4, "uniform")
        expected = [f"{vid} raw frame {raw[np.abs(raw - f).argmin()]}" for f in fed]
        assert batch.aux["narration"].captions[row] == expected
    # exact matching refuses raw-video indices that were never narrated, and says what to use
    with pytest.raises(ValueError, match="narration_match: nearest"):
        align_narration(store["video5"], np.array([1, 2]), 2, "exact", out)


def test_caption_keys_ordered_by_their_number(fake_msrvtt: Path, tmp_path: Path) -> None:
    keys = [f"caption_{n}" for n in (10, 2, 1, 12, 9, 11, 3, 4, 5, 6, 7, 8)]  # file order is not frame order
    (tmp_path / "n.json").write_text(json.dumps([{"video_file": "video0", **{k: f"frame {k[8:]}" for k in keys}}]))
    run_import("--format", "narvid", "--input", tmp_path / "n.json", "--dataset", "msrvtt", "--root", fake_msrvtt,
               "--out", tmp_path / "s.jsonl", "--allow-missing")
    record = CaptionStore.load(tmp_path / "s.jsonl", "narration")["video0"]
    assert record.captions == [f"frame {n}" for n in range(1, 13)] and record.frame_indices == list(range(12))


def test_msrvtt_held_out_selection_videos_are_training_videos_to_import(fake_msrvtt: Path, tmp_path: Path) -> None:
    """MSR-VTT selects models on held-out training videos by default (``val_protocol: heldout``); those videos are
    still in MSR-VTT's train list, so a narration file covering every video imports whole, whatever the held-out
    size (it once listed train minus the held-out videos and refused them as unknown ids)."""
    ids = [f"video{i}" for i in range(18)]  # the fixture's 12 training and 6 test videos
    (tmp_path / "n.json").write_text(json.dumps([{"video_file": vid, **_caps(2, vid)} for vid in ids]))
    for held_out in ("2", "6"):
        out = tmp_path / f"s{held_out}.jsonl"
        run_import("--format", "narvid", "--input", tmp_path / "n.json", "--dataset", "msrvtt", "--root", fake_msrvtt,
                   "--out", out, "--set", f"val_videos={held_out}")
        assert sorted(CaptionStore.load(out, "narration")) == sorted(ids)


def _caps(n: int, vid: str = "video0") -> dict[str, str]:
    return {f"caption_{i + 1}": f"{vid} caption {i}" for i in range(n)}


NARVID_ERRORS = [
    ([{"caption_1": "a"}], r"n\.json: record #0 lacks 'video_file'"),
    ([{"video_file": "video0"}], r"record #0 \(video 'video0'\) has no captions"),
    ([{"video_file": "video0", "caption_1": "a", "caption_2": "  "}], r"caption 'caption_2' is empty"),
    ([{"video_file": "video0", "caption_1": "a", "caption_3": "c"}],
     r"caption keys have gaps: caption_1\.\.caption_2 expected, missing \['caption_2'\]"),
    ([{"video_file": "video0", "caption_1": "a", "frames": 3}], r"unexpected key 'frames'"),
    ([{"video_file": "video0", **_caps(2)}, {"video_file": "video0", **_caps(2)}],
     r"record #1 \(video 'video0'\): second record for this video \(first: .*record #0"),
    ([{"video_file": "video99", **_caps(2)}],
     r"n\.json: 1 id\(s\) are not in the msrvtt splits \['train', 'test'\] .*\['video99'\].*--skip-unknown"),
    ([{"video_file": "video0.mp4", **_caps(2)}],
     r"differ from the msrvtt split ids only by the extension, e.g. 'video0.mp4' in the file vs 'video0'.*"
     r"--ignore-id-extension"),
    ([{"video_file": "video0", **_caps(2)}],
     r"n\.json: 17 video\(s\) of the msrvtt splits are missing from the file\(s\): train: 11 of 12 \(first: "
     r"\['video1', 'video2', 'video3', 'video4', 'video5'\]\); test: 6 of 6 .*--allow-missing"),
    ({"video0": {"titles": ["a"]}}, r"expected a JSON list .*got dict \(an object: is this a Cap4Video file\? use "
                                    r"--format cap4video\)"),
    ("[{", r"n\.json: malformed JSON at line 1"),
]


@pytest.mark.parametrize(("content", "message"), NARVID_ERRORS)
def test_narvid_errors(fake_msrvtt: Path, tmp_path: Path, content: Any, message: str) -> None:
    (tmp_path / "n.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CaptionImportError, match=message):
        run_import("--format", "narvid", "--input", tmp_path / "n.json", "--dataset", "msrvtt", "--root",
                   fake_msrvtt, "--out", tmp_path / "s.jsonl")
    assert not (tmp_path / "s.jsonl").exists()  # nothing is written unless the whole import passes


def test_two_records_meet_under_ignore_id_extension(fake_msrvtt: Path, tmp_path: Path) -> None:
    narvid_file(tmp_path / "n.json", {"video0": ["a"], "video0.mp4": ["b"]})
    with pytest.raises(CaptionImportError, match=r"record #1 \(video 'video0.mp4'\): a second record for video "
                                                 r"'video0' \(first: .*record #0"):
        run_import("--format", "narvid", "--input", tmp_path / "n.json", "--dataset", "msrvtt", "--root",
                   fake_msrvtt, "--out", tmp_path / "s.jsonl", "--ignore-id-extension", "--allow-missing")


def test_narvid_caption_count_must_match_the_frame_folder(narrated: dict[str, Any], tmp_path: Path) -> None:
    captions = dict(narrated["captions"])
    captions["video5"] = [*captions["video5"], "one caption too many"]
    with pytest.raises(CaptionImportError, match=(
            r"narration\.json: the caption count disagrees with the frame folder of 1 of 6 videos \('video5': 5 "
            r"captions, 4 frames in .*frames_1fps_32_max4_narvid/video5\).*--frames-sampler narvid --frames-max 5 "
            r"\(the largest caption count in the file; the authors' msrvtt runs use 12 frames\)")):
        run_import("--format", "narvid", "--input", narvid_file(tmp_path / "narration.json", captions), "--dataset",
                   "msrvtt", "--root", narrated["root"], "--out", tmp_path / "s.jsonl", "--frames-dir",
                   narrated["frames_dir"])
    with pytest.raises(CaptionImportError, match="holds none of the file's videos"):
        run_import("--format", "narvid", "--input", narrated["file"], "--dataset", "msrvtt", "--root",
                   narrated["root"], "--out", tmp_path / "s.jsonl", "--frames-dir", tmp_path)


def test_allow_missing_reports_instead(fake_msrvtt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    narvid_file(tmp_path / "n.json", {"video0": ["a", "b"], "video13": ["c"]})
    summary = run_import("--format", "narvid", "--input", tmp_path / "n.json", "--dataset", "msrvtt", "--root",
                         fake_msrvtt, "--out", tmp_path / "s.jsonl", "--allow-missing")
    assert summary["splits"]["train"] == {"videos": 12, "imported": 1, "missing": 11,
                                          "first_missing": [f"video{i}" for i in range(1, 12)]}
    assert "warning: test: 5 videos have no 'narration' record" in capsys.readouterr().out
    assert set(CaptionStore.load(tmp_path / "s.jsonl", "narration")) == {"video0", "video13"}


def test_didemo_ids_without_extension(tmp_path: Path) -> None:
    make_fake_didemo(tmp_path)
    ids = [line for split in ("train", "val", "test") for line in (tmp_path / f"{split}_list.txt").read_text().split()]
    narvid_file(tmp_path / "didemo_narration.json", {Path(vid).stem: [f"{vid} frame 0"] for vid in ids})
    args = ["--format", "narvid", "--input", tmp_path / "didemo_narration.json", "--dataset", "didemo", "--root",
            tmp_path, "--out", tmp_path / "s.jsonl"]
    with pytest.raises(CaptionImportError, match=rf"only by the extension, e.g. '{Path(ids[0]).stem}' in the file vs "
                                                 rf"'{ids[0]}' in the splits"):
        run_import(*args)
    run_import(*args, "--ignore-id-extension")
    store = CaptionStore.load(tmp_path / "s.jsonl", "narration")
    assert set(store) == set(ids) and store[ids[0]].captions == [f"{ids[0]} frame 0"]


# --------------------------------------------------------------------------------------------- Cap4Video
def cap4video_msrvtt(root: Path, folder: Path) -> tuple[Path, Path]:
    """The two MSR-VTT files of the Cap4Video release, for the fake MSR-VTT (train video0-11, test video12-17)."""
    data = json.loads((root / "MSRVTT_data.json").read_text())
    train = [f"video{i}" for i in range(12)]
    titles = {vid: [f"{vid} zerocap {k}" for k in range(3)] for vid in train}
    title: dict[str, Any] = {vid: f"{vid} zerocap 1" for vid in train}
    title["video1"] = ["video1 zerocap 2", "video1 selected elsewhere"]  # 'title' may hold a list
    (folder / "msrvtt_train_with_vitb32_max1_title_titles.json").write_text(
        json.dumps({**data, "titles": titles, "title": title}))
    test = {f"video{i}": {"gt": "a query", "titles": [f"video{i} zerocap {k}" for k in range(4)]}
            for i in range(12, 18)}
    (folder / "MSRVTT_JSFUSION_test_titles.json").write_text(json.dumps(test))
    return folder / "msrvtt_train_with_vitb32_max1_title_titles.json", folder / "MSRVTT_JSFUSION_test_titles.json"


def test_cap4video_msrvtt_train_and_test_into_one_store(fake_msrvtt: Path, tmp_path: Path) -> None:
    train, test = cap4video_msrvtt(fake_msrvtt, tmp_path)
    summary = prepare.main(["import-captions", "--format", "cap4video", "--input", str(train), "--input", str(test),
                            "--dataset", "msrvtt", "--root", str(fake_msrvtt), "--out", str(tmp_path / "m.jsonl")])
    assert summary["videos_written"] == 18 and summary["captions_per_video"] == {"min": 3, "mean": 3.39, "max": 4}
    store = CaptionStore.load(tmp_path / "m.jsonl", "multi")
    # the selected caption first, taken out of the generated ones (K unchanged)
    assert store["video0"].captions == ["video0 zerocap 1", "video0 zerocap 0", "video0 zerocap 2"]
    assert store["video1"].captions == ["video1 zerocap 2", "video1 selected elsewhere", "video1 zerocap 0",
                                        "video1 zerocap 1"]
    assert store["video12"].captions == [f"video12 zerocap {k}" for k in range(4)]
    lines = {r["video_id"]: r for r in map(json.loads, (tmp_path / "m.jsonl").read_text().splitlines())}
    assert lines["video1"]["selected"] == ["video1 zerocap 2", "video1 selected elsewhere"]
    assert lines["video12"]["selected"] == [] and lines["video12"]["cap4video_shape"] == "msrvtt_test"
    assert lines["video0"]["model"].startswith("cap4video-release")

    # the same store in two runs with --append; a third run would duplicate ids
    base = ["--format", "cap4video", "--dataset", "msrvtt", "--root", fake_msrvtt, "--out", tmp_path / "a.jsonl"]
    run_import(*base, "--input", train, "--allow-missing")
    run_import(*base, "--input", test, "--append")
    assert CaptionStore.load(tmp_path / "a.jsonl", "multi") == store
    with pytest.raises(CaptionImportError, match=r"a\.jsonl exists; pass --append"):
        run_import(*base, "--input", test)
    with pytest.raises(CaptionImportError, match=r"already holds 'multi' records for 6 of these videos \(first: "
                                                 r"\['video12'"):
        run_import(*base, "--input", test, "--append")


def test_cap4video_vatex_train_and_test(tmp_path: Path) -> None:
    make_fake_vatex(tmp_path)
    lists = {s: (tmp_path / f"{s}_list.txt").read_text().split() for s in ("train", "val", "test")}
    (tmp_path / "vatex_train_vitb32_max1_nopro_final.json").write_text(json.dumps(
        {vid: {"captions": [f"{vid} cap {k}" for k in range(3)], "max1": f"{vid} best"} for vid in lists["train"]}))
    (tmp_path / "vatex_test_vitb32_it30_prompt.json").write_text(json.dumps(
        {vid: [f"{vid} cap {k}" for k in range(30)] for vid in lists["test"]}))
    args = ["--format", "cap4video", "--input", tmp_path / "vatex_train_vitb32_max1_nopro_final.json", "--input",
            tmp_path / "vatex_test_vitb32_it30_prompt.json", "--dataset", "vatex", "--root", tmp_path,
            "--out", tmp_path / "m.jsonl"]
    with pytest.raises(CaptionImportError, match=rf"2 video\(s\) of the vatex splits are missing from the file\(s\): "
                                                 rf"val: 2 of 2 \(first: \['{lists['val'][0]}'"):
        run_import(*args)
    summary = run_import(*args, "--allow-missing")
    assert summary["splits"]["val"]["missing"] == 2 and summary["splits"]["test"]["imported"] == 3
    store = CaptionStore.load(tmp_path / "m.jsonl", "multi")
    first = lists["train"][0]
    assert store[first].captions == [f"{first} best", *(f"{first} cap {k}" for k in range(3))]  # max1 kept, K + 1
    assert len(store[lists["test"][0]].captions) == 30


@pytest.mark.parametrize(("content", "message"), [
    ([1, 2], r"not a Cap4Video caption file: found list \(a list: is this a NarVid narration file\?"),
    ({"video0": {"text": "x"}}, r"found an object whose first value is dict with keys \['text'\]\. Expected one of"),
    ({"video0": {"gt": "q", "titles": []}}, r"video 'video0': expected a non-empty list of captions"),
    ({"video0": ["fine", ""]}, r"video 'video0': caption #1 is empty"),
])
def test_cap4video_errors(fake_msrvtt: Path, tmp_path: Path, content: Any, message: str) -> None:
    (tmp_path / "c.json").write_text(json.dumps(content))
    with pytest.raises(CaptionImportError, match=message):
        run_import("--format", "cap4video", "--input", tmp_path / "c.json", "--dataset", "msrvtt", "--root",
                   fake_msrvtt, "--out", tmp_path / "s.jsonl", "--allow-missing")


def test_cli_error_is_one_clear_line(fake_msrvtt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "n.json").write_text(json.dumps([{"video_file": "video0", "caption_2": "b"}]))
    monkeypatch.setattr(sys, "argv", ["prepare", "import-captions", "--format", "narvid", "--input",
                                      str(tmp_path / "n.json"), "--dataset", "msrvtt", "--root", str(fake_msrvtt),
                                      "--out", str(tmp_path / "s.jsonl")])
    with pytest.raises(SystemExit) as exit_info:  # `python -m experiments.prepare ...`, in-process
        prepare.cli()
    message = str(exit_info.value.code)
    assert message.startswith("import-captions: error: ") and "caption keys have gaps" in message


def test_prompt_is_the_captioners() -> None:
    # the captioner's constant, read from its source (importing lightning_modules would load every backbone)
    source = (REPO / "lightning_modules" / "captioning" / "captioner.py").read_text()
    assert f'NARVID_PROMPT = "{import_captions.NARVID_PROMPT}"' in source


# --------------------------------------------------------------------------------------------- property-based
RELEASED = {  # a valid released file of each format for write_annotations("msrvtt") (video0-3 train, 4-5 test)
    "narvid": [{"video_file": f"video{i}", "caption_1": f"frame 1 of {i} é", "caption_2": f"frame 2 of {i}"}
               for i in range(4)],
    "cap4video": {"titles": {f"video{i}": [f"zerocap {i} {k} 漢" for k in range(3)] for i in range(4)},
                  "title": {f"video{i}": f"zerocap {i} 1 漢" for i in range(4)}},
}


@pytest.mark.parametrize("fmt", ["narvid", "cap4video"])
@given(data=st.data())
def test_generated_malformed_released_files_fail_clearly_and_leave_the_store_alone(fmt: str,
                                                                                  data: st.DataObject) -> None:
    """A released file with one drawn mutation, imported into a new store or --append-ed onto an existing one (its
    last line sometimes torn inside a character): the import succeeds, or fails with one CaptionImportError naming
    the input or the store; after a failure the store is absent or byte-for-byte unchanged, and no temporary file is
    ever left beside it."""
    mutated = data.draw(mutated_json(json.dumps(RELEASED[fmt], ensure_ascii=False).encode()), label="input")
    append = data.draw(st.booleans(), label="append")
    torn = append and data.draw(st.booleans(), label="torn store")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_annotations("msrvtt", Path(tmp) / "ds")
        source = Path(tmp) / "released.json"
        source.write_bytes(mutated)
        out = Path(tmp) / "store" / "captions.jsonl"
        out.parent.mkdir()
        if append:  # a record of the other kind for an imported video, and one of this kind for a video not imported
            kind = "narration" if fmt == "narvid" else "multi"
            other = "multi" if kind == "narration" else "narration"
            lines = [caption_record("video0", other, "é 漢"), caption_record("video5", kind)]
            out.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in lines)
                            + ('{"video_id": "video4", "captions": ["漢'.encode()[:-1] if torn else b""))
        before = snapshot(out.parent)
        args = ["--format", fmt, "--input", source, "--dataset", "msrvtt", "--root", root, "--out", out,
                "--allow-missing", "--skip-unknown", *(["--append"] if append else [])]
        try:
            run_import(*args)
        except CaptionImportError as exc:
            assert "released.json" in str(exc) or "captions.jsonl" in str(exc), str(exc)
            assert snapshot(out.parent) == before
        else:
            assert CaptionStore.read_all(out)  # the written store reads back whole
        assert [p.name for p in out.parent.iterdir() if p.name != "captions.jsonl"] == []

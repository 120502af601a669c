"""Bad inputs fail early with an error that says what is wrong and where (each message asserted)."""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from datamodules import MSRVTT, MSVD, VATEX, DiDeMo
from datamodules.captions import MissingCaptionsError
from datamodules.readers import VideoDecodeError
from main import main
from tests.conftest import make_fake_msrvtt
from tests.fake_datasets import make_fake_didemo, make_fake_msvd, make_fake_vatex
from tests.malformed_inputs import (
    annotation_files,
    file_strings,
    is_clear_error,
    load_every_split,
    mutate_file,
    snapshot,
    write_annotations,
)
from tests.run_helpers import TINY_CLIP4CLIP as CONF
from tests.run_helpers import csv_logger

CopyOf = Callable[[str], Path]
SMALL = {"num_frames": 4, "image_size": 32, "num_workers": 0, "eval_batch_size": 2}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fake copy of each layout; tests copy the one they break."""
    base = tmp_path_factory.mktemp("pristine")
    make_fake_msvd(base / "msvd")
    make_fake_vatex(base / "vatex")
    make_fake_didemo(base / "didemo")
    make_fake_msrvtt(base / "msrvtt", num_train=4, num_test=3, captions_per_video=2)
    return {p.name: p for p in base.iterdir()}


@pytest.fixture()
def copy_of(pristine: dict[str, Path], tmp_path: Path) -> CopyOf:
    def _copy(name: str) -> Path:
        return Path(shutil.copytree(pristine[name], tmp_path / name))

    return _copy


def test_malformed_json(copy_of: CopyOf) -> None:
    root = copy_of("didemo")
    (root / "test_data.json").write_text('[{"video": "a.mp4", "description": "x",}]')
    with pytest.raises(ValueError, match=r"test_data\.json: malformed JSON at line 1 column \d+"):
        DiDeMo(root=str(root), **SMALL).setup("test")


def test_missing_csv_column(copy_of: CopyOf) -> None:
    root = copy_of("msrvtt")
    path = root / "MSRVTT_JSFUSION_test.csv"
    path.write_text(path.read_text().replace("sentence", "caption", 1))
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test\.csv: missing column\(s\) \['sentence'\]"):
        MSRVTT(root=str(root), video_dir="videos/all", val_videos=4, **SMALL).setup("test")


def test_split_id_absent_from_annotations(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    with (root / "test_list.txt").open("a") as fh:
        fh.write("ghost_clip_1_2\n")
    with pytest.raises(ValueError, match=r"raw-captions\.pkl: 1 video\(s\) of split 'test' \(.*test_list\.txt\) are "
                                         r"absent from the annotations \(first: \['ghost_clip_1_2'\]\)"):
        MSVD(root=str(root), **SMALL).setup("test")


def test_missing_video_names_first_ids_and_threshold(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    victim = (root / "test_list.txt").read_text().split()[1]
    (root / "videos" / f"{victim}.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of 3 videos of split 'test' are missing or unreadable under "
                                                rf".*videos \(first: \['{victim}'\]\).*max_missing_fraction.*"
                                                r"python -m experiments\.prepare vatex"):
        VATEX(root=str(root), **SMALL).setup("test")
    dm = VATEX(root=str(root), max_missing_fraction=0.5, **SMALL)
    dm.setup("test")
    facts = dm.describe("test")
    assert facts["missing_video_ids"] == [victim] and facts["num_texts_dropped_with_missing_videos"] == 10


def test_undecodable_video_raises_naming_file_and_id(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    victim = (root / "test_list.txt").read_text().split()[0]
    (root / "YouTubeClips" / f"{victim}.avi").write_bytes(b"\x00not a video" * 50)
    dm = MSVD(root=str(root), **SMALL)
    dm.setup("test")
    with pytest.raises(VideoDecodeError, match=rf"could not decode .*{victim}\.avi.*\[video '{victim}' of split "
                                               r"'test'; set data\.init_args\.on_decode_error=skip"):
        next(iter(dm.test_dataloader()[1]))


def test_empty_caption(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    data = json.loads((root / "vatex_data.json").read_text())
    vid = (root / "train_list.txt").read_text().split()[2]
    data[vid]["enCap"][3] = "  "
    (root / "vatex_data.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"vatex_data\.json: empty caption #3 of video '{vid}' \(split 'train'\)"):
        VATEX(root=str(root), **SMALL).setup("fit")


def test_missing_aux_caption_id(copy_of: CopyOf) -> None:
    root = copy_of("didemo")
    first = (root / "test_list.txt").read_text().split()[0]
    (root / "supp.jsonl").write_text(json.dumps({"video_id": first, "kind": "supplement", "prompt": "p",
                                                 "captions": ["long"], "model": "m", "created": "t"}) + "\n")
    with pytest.raises(MissingCaptionsError, match=r"supp\.jsonl: 2 of 3 videos have no 'supplement' captions "
                                                   r"\(first: \[.*\]\)\. Generate them with: python main\.py predict "
                                                   r"--config configs/captioners/supplement_a\.yaml"):
        DiDeMo(root=str(root), aux_captions={"supplement": "supp.jsonl"}, **SMALL).setup("test")


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_pickle_with_forbidden_global(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    with (root / "raw-captions.pkl").open("wb") as fh:
        pickle.dump({"clip": [["a", "b"]], "x": _Evil()}, fh)
    with pytest.raises(ValueError, match=r"raw-captions\.pkl: refused to unpickle: forbidden global builtins\.print"):
        MSVD(root=str(root), **SMALL).setup("test")


def test_wrong_frame_folder_layout(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    frames = root / "frames"
    frames.mkdir()
    for vid in (root / "test_list.txt").read_text().split():  # flat: <video>_<n>.jpg instead of <video>/<n>.jpg
        for n in range(3):
            (frames / f"{vid}_{n:04d}.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"Wrong frame-folder layout: reader 'frames' expects "
                                                r"<video_dir>/<video_id>/<n>\.jpg, but .*frames holds 9 image files"):
        MSVD(root=str(root), video_dir="frames", reader="frames", **SMALL).setup("test")
    with pytest.raises(FileNotFoundError, match="holds video files: use reader 'decord' or 'pyav', not 'frames'"):
        MSVD(root=str(root), reader="frames", **SMALL).setup("test")


def test_config_pointing_at_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MSVD: data root .*no_such_dir does not exist; set "
                                                r"data\.init_args\.root"):
        main(["fit", "--config", str(CONF), "--data.class_path", "MSVD", "--data.init_args.root",
              str(tmp_path / "no_such_dir"), "--trainer.logger", "false"])


def test_missing_video_dir(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    with pytest.raises(FileNotFoundError, match=r"VATEX: video_dir .*clips does not exist"):
        VATEX(root=str(root), video_dir="clips", **SMALL).setup("test")


def test_duplicate_id_in_split_list(copy_of: CopyOf) -> None:
    root = copy_of("didemo")
    ids = (root / "val_list.txt").read_text().split()
    (root / "val_list.txt").write_text("\n".join([*ids, ids[0]]) + "\n")
    with pytest.raises(ValueError, match=rf"val_list\.txt: video ids listed more than once: \['{ids[0]}'\]"):
        DiDeMo(root=str(root), **SMALL).setup("fit")


def test_official_vatex_entry_without_encap(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    (root / "vatex_data.json").unlink()
    (root / "vatex_training_v1.0.json").write_text(json.dumps([{"videoID": "x", "chCap": ["c"]}]))
    (root / "vatex_validation_v1.0.json").write_text("[]")
    with pytest.raises(ValueError, match=r"vatex_training_v1\.0\.json: entry 0 lacks 'videoID' or 'enCap'"):
        VATEX(root=str(root), **SMALL).setup("test")


def test_manifest_unreadable_counts_as_missing(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    victim = (root / "test_list.txt").read_text().split()[2]
    manifest = {"dataset": "msvd", "video_dir": str(root / "YouTubeClips"),
                "videos": {victim: {"status": "unreadable", "error": "moov atom not found"}}}
    (root / "vtr_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=rf"first: \['{victim}'\].*manifest: .*vtr_manifest\.json"):
        MSVD(root=str(root), **SMALL).setup("test")


def test_decode_failures_are_skipped_counted_and_reported(copy_of: CopyOf, tmp_path: Path) -> None:
    """on_decode_error=skip: a corrupt training clip and a corrupt test clip are dropped (not zero-filled),
    counted, and metrics.json says the evaluation covered 2 of 3 test videos."""
    root = copy_of("msrvtt")
    for vid in ("video1", "video5"):  # video5 is a test video (4 train, 3 test)
        (root / "videos" / "all" / f"{vid}.mp4").write_bytes(b"garbage" * 100)
    cli = main(["fit", "--config", str(CONF), "--data.init_args.root", str(root),
                "--data.init_args.on_decode_error", "skip", "--data.init_args.one_caption_per_video", "true",
                # this fake set has 4 training videos: select on the test split so all of them (video1 too) train
                "--data.init_args.val_protocol", "test",
                "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(tmp_path, "skip")])
    record = json.loads((Path(cli.trainer.log_dir) / "test" / "metrics.json").read_text())
    assert record["num_videos"] == 2 and record["num_texts"] == 2
    assert record["metrics"]["num_videos_failed"] == 1 and record["metrics"]["num_texts_unscored"] == 1
    data = record["data"]
    assert data["num_videos_failed"] == 1 and data["failed_video_ids"] == ["video5"]
    assert data["num_videos_evaluated"] == 2 and data["num_videos_listed"] == 3
    assert data["train_decode_failures"] == 1 and data["train_failed_video_ids"] == ["video1"]


# --------------------------------------------------------------------------------------------- property-based
@pytest.mark.parametrize("dataset", ["msrvtt", "msvd", "vatex", "vatex_official", "didemo"])
@given(data=st.data())
def test_generated_malformed_annotation_files_fail_clearly_or_load_as_written(dataset: str,
                                                                              data: st.DataObject) -> None:
    """One drawn mutation of one of the dataset's annotation files (tests/malformed_inputs.py): the parser either
    refuses it with one of the suite's errors naming that file, or loads texts that are strings written in the files
    (never a coerced None/number/list), with unique ids and every video inside the video folder. Either way no file
    is changed."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_annotations(dataset, Path(tmp) / "ds")
        name = data.draw(st.sampled_from(annotation_files(dataset, root)), label="file")
        (root / name).write_bytes(mutate_file(data.draw, root / name))
        before = snapshot(root)
        try:
            splits = load_every_split(dataset, root)
        except Exception as exc:
            assert is_clear_error(exc, name), f"{type(exc).__name__}: {exc}"
        else:
            written = file_strings(root)
            videos = (root / "videos").resolve()
            for split in splits.values():
                assert len({t.text_id for t in split.texts}) == len(split.texts)
                for text in split.texts:
                    assert isinstance(text.text, str) and text.text.strip()
                    if dataset != "didemo":  # DiDeMo's texts are paragraphs joined from several strings
                        assert text.text in written, f"{text.text!r} is not written in any file"
                for video in split.videos:
                    assert isinstance(video.video_id, str) and video.path.resolve().is_relative_to(videos)
        assert snapshot(root) == before

"""python -m experiments.prepare: ids and counts against the split files, manifest, PyAV re-encoding and frame
extraction, and the data modules reading the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules import MSVD, DiDeMo
from experiments import prepare
from tests.fake_datasets import make_fake_didemo, make_fake_msvd
from tests.run_helpers import REPO


def test_manifest_compress_and_frames(tmp_path: Path) -> None:
    make_fake_msvd(tmp_path)
    test_ids = (tmp_path / "test_list.txt").read_text().split()
    (tmp_path / "YouTubeClips" / f"{test_ids[0]}.avi").unlink()
    (tmp_path / "YouTubeClips" / f"{test_ids[1]}.avi").write_bytes(b"junk" * 64)
    manifest = prepare.main(["msvd", "--videos", str(tmp_path / "YouTubeClips"), "--annotations", str(tmp_path),
                             "--compress", "--fps", "4", "--short-side", "34", "--extract-frames"])
    assert manifest == json.loads((tmp_path / "vtr_manifest.json").read_text())
    assert manifest["splits"]["test"] == {"listed": 3, "present": 1, "missing": 1, "unreadable": 1,
                                          "expected": 670, "first_missing": test_ids[:2]}
    assert manifest["splits"]["train"]["present"] == 4 and manifest["splits"]["val"]["listed"] == 2
    assert manifest["encoding"]["fps"] == 4 and manifest["encoding"]["short_side"] == 34
    good = manifest["videos"][test_ids[2]]
    # 16 source frames at 8 fps = 2 s -> 8 frames at 4 fps; 32x32 -> 34x34
    assert good["status"] == "present" and good["fps"] == 4 and good["frames"] == 8
    assert (good["width"], good["height"]) == (34, 34) and good["source"]["fps"] == 8
    assert "error" in manifest["videos"][test_ids[1]] and manifest["videos"][test_ids[0]]["status"] == "missing"
    video_dir = Path(manifest["video_dir"])
    frames_dir = Path(manifest["frames_dir"])
    assert video_dir.name == "videos_4fps_34" and len(list((frames_dir / test_ids[2]).glob("*.jpg"))) == 8

    # the data module reads the manifest: refuses past the threshold naming it, else records the encoding
    with pytest.raises(FileNotFoundError, match=r"2 of 3 videos of split 'test'.*manifest: .*vtr_manifest\.json"):
        MSVD(root=str(tmp_path), video_dir=str(video_dir), num_frames=4, image_size=24, num_workers=0).setup("test")
    for reader, directory in (("decord", video_dir), ("frames", frames_dir)):
        dm = MSVD(root=str(tmp_path), video_dir=str(directory), reader=reader, num_frames=4, image_size=24,
                  num_workers=0, max_missing_fraction=0.7)
        dm.setup("test")
        batch = next(iter(dm.test_dataloader()[1]))
        assert batch.video_ids == [test_ids[2]] and batch.frames.shape == (1, 4, 3, 24, 24)
        facts = dm.describe("test")
        assert facts["encoding"]["fps"] == 4 and facts["num_videos_missing"] == 2
        assert facts["num_videos_unreadable"] == 1


def test_didemo_ids_with_extension_and_cli(tmp_path: Path) -> None:
    make_fake_didemo(tmp_path)
    out = subprocess.run([sys.executable, "-m", "experiments.prepare", "didemo", "--videos", str(tmp_path / "videos"),
                          "--annotations", str(tmp_path), "--extract-frames", "--fps", "4", "--short-side", "16"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| test | 3 | 3 | 0 | 0 | 1004 |" in out.stdout
    manifest = json.loads((tmp_path / "vtr_manifest.json").read_text())
    assert manifest["encoding"] is None and manifest["video_dir"] == str((tmp_path / "videos").resolve())
    dm = DiDeMo(root=str(tmp_path), video_dir=manifest["frames_dir"], reader="frames", num_frames=3, image_size=16,
                num_workers=0)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()[1]))
    assert batch.video_ids[0].endswith(".mp4") and batch.frames.shape[1:] == (3, 3, 16, 16)
    assert dm.describe("test")["frames_fps"] == 4.0


def test_split_errors_surface_before_any_video_work(tmp_path: Path) -> None:
    make_fake_msvd(tmp_path)
    with (tmp_path / "val_list.txt").open("a") as fh:
        fh.write("nobody\n")
    with pytest.raises(ValueError, match=r"split 'val' .* absent from the annotations \(first: \['nobody'\]\)"):
        prepare.main(["msvd", "--videos", str(tmp_path / "YouTubeClips"), "--annotations", str(tmp_path)])


def test_set_options_are_typed_by_the_data_module_and_refused_when_malformed(
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="prepare")
    options = prepare.data_module_options(parser, ["val_videos=5", "train_csv=MSRVTT_train.7k.csv",
                                                   "test_protocol=all_captions"], "msrvtt", {"root": "--annotations"})
    assert options == {"val_videos": 5, "train_csv": "MSRVTT_train.7k.csv", "test_protocol": "all_captions"}
    for option, message in [("val_videos", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"),
                            ("test_protocol=every", "test_protocol"), ("root=/x", "set it with --annotations")]:
        with pytest.raises(SystemExit):
            prepare.data_module_options(parser, [option], "msrvtt", {"root": "--annotations"})
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare.data_module_options(parser, ["val_videos=1", "val_videos=2"], "msrvtt", {})
    assert "given twice" in capsys.readouterr().err

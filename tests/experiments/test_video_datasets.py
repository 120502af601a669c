"""``experiments.video_datasets``: the facts ``prepare`` and ``import-captions`` share, in one place neither program
has to import the other for."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from experiments import import_captions, prepare, video_datasets
from experiments.video_datasets import DATASETS, EXPECTED, SPLITS, data_module_options, linspace_positions, probe


def test_every_dataset_has_its_splits_and_public_counts() -> None:
    assert set(DATASETS) == set(SPLITS) == set(EXPECTED) == {"msrvtt", "msvd", "vatex", "didemo"}
    for name, splits in SPLITS.items():
        assert set(EXPECTED[name]) == set(splits), name


def test_both_programs_read_the_same_objects() -> None:
    for name in ("DATASETS", "SPLITS", "LISTING_OPTIONS", "probe", "linspace_positions", "data_module_options"):
        assert getattr(prepare, name) is getattr(video_datasets, name), name
    assert import_captions.DATASETS is DATASETS and import_captions.probe is probe


def test_linspace_positions_caps_as_clip4clip_does() -> None:
    assert linspace_positions(8, 4).tolist() == [0, 2, 4, 7]
    assert linspace_positions(3, 4).tolist() == [0, 1, 2] and linspace_positions(5, None).tolist() == [0, 1, 2, 3, 4]


def test_probe_tells_missing_from_unreadable(tmp_path: Path) -> None:
    assert probe(tmp_path / "absent.mp4") == {"status": "missing", "path": str(tmp_path / "absent.mp4")}
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    broken = probe(tmp_path / "broken.mp4")
    assert broken["status"] == "unreadable" and broken["error"]


def test_set_options_are_typed_by_the_data_modules_signature(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="prepare")
    assert data_module_options(parser, ["val_videos=5"], "msrvtt", {}) == {"val_videos": 5}
    with pytest.raises(SystemExit):
        data_module_options(parser, ["no_such_key=1"], "msrvtt", {})
    assert "no_such_key" in capsys.readouterr().err

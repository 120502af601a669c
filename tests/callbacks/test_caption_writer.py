"""Crash safety of the caption store: torn lines, resume, SIGKILL midway, per-rank files and their merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from callbacks.caption_writer import CaptionWriter, merge_rank_files, read_jsonl, repair_jsonl
from datamodules.jsonl import repaired_bytes
from main import main
from tests.caption_helpers import CONFIGS, read_store, synth_args, tiny_synth
from tests.malformed_inputs import caption_record, caption_store_bytes, is_clear_error, mutated_jsonl
from tests.run_helpers import REPO


def _rec(vid: str, kind: str = "narration", text: str = "x") -> dict:
    return {"video_id": vid, "kind": kind, "prompt": "p", "captions": [text], "model": "m",
            "created": "2026-01-01T00:00:00+00:00", "frame_indices": [0]}


def _write(path: Path, records: list[dict], tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_repair_drops_torn_last_line_only(tmp_path: Path):
    store = tmp_path / "s.jsonl"
    _write(store, [_rec("a"), _rec("b")], tail=b'{"video_id": "c", "capt')
    assert repair_jsonl(store) == len(b'{"video_id": "c", "capt')
    assert [r["video_id"] for r in read_jsonl(store)] == ["a", "b"]
    assert repair_jsonl(store) == 0
    _write(store, [_rec("a")], tail=b'{"video_id": "b"\n')  # newline written but the JSON is cut
    repair_jsonl(store)
    assert store.read_bytes().endswith(b"\n") and [r["video_id"] for r in read_jsonl(store)] == ["a"]
    only = tmp_path / "only.jsonl"
    only.write_bytes(b'{"video_')
    repair_jsonl(only)
    assert only.read_bytes() == b""
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(_rec("a")).encode() + b"\nnot json\n" + json.dumps(_rec("b")).encode() + b"\n")
    with pytest.raises(ValueError, match=r":2: malformed JSON line"):
        list(read_jsonl(bad))


def test_merge_is_deterministic_dedups_and_skips_existing(tmp_path: Path):
    out = tmp_path / "store.jsonl"
    _write(out, [_rec("v3")], tail=b'{"torn')
    _write(tmp_path / "store.jsonl.rank1", [_rec("v9", text="r1"), _rec("v1", text="r1"), _rec("v2", kind="multi")])
    _write(tmp_path / "store.jsonl.rank0", [_rec("v5"), _rec("v1", text="r0"), _rec("v3", text="again")],
           tail=b'{"video_id": "v7"')
    assert merge_rank_files(out, "narration") == 3
    records = read_store(out)
    assert [r["video_id"] for r in records] == ["v3", "v1", "v5", "v9"]  # existing first, then sorted
    assert records[1]["captions"] == ["r0"]  # duplicate across ranks: the lowest rank wins
    assert not list(tmp_path.glob("store.jsonl.rank*"))
    assert merge_rank_files(out, "narration") == 0


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    parent = tmp_path_factory.mktemp("synthwriter")
    return parent, tiny_synth(parent)


def _narration_args(parent: Path, run_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--config", str(CONFIGS / "synthvtr_narration.yaml"), *synth_args(parent),
            f"--trainer.default_root_dir={run_dir}", f"--trainer.callbacks.init_args.output={out}", *extra]


def _assert_complete(out: Path, root: Path, per_video: int = 4) -> None:
    records = read_store(out)
    counts = Counter(r["video_id"] for r in records)
    videos = sorted(json.loads(line)["video_id"] for line in (root / "synthvtr" / "specs.jsonl").open())
    assert sorted(counts) == videos and set(counts.values()) == {1}, counts
    for r in records:
        assert len(r["captions"]) == per_video and len(r["frame_indices"]) == per_video


def test_resume_after_a_multi_rank_crash_merges_leftover_rank_files(synth: tuple[Path, Path], tmp_path: Path):
    parent, root = synth
    out = tmp_path / "captions" / "narration.jsonl"
    # a previous 2-rank run died: rank 0 wrote synth00000 (+ a torn line), rank 1 wrote synth00001
    main(_narration_args(parent, tmp_path / "r0", out, "--trainer.enable_progress_bar=false"))
    full = {r["video_id"]: r for r in read_store(out)}
    out.unlink()
    _write(out.with_name(out.name + ".rank0"), [full["synth00000"]], tail=b'{"video_id": "synth00002", "ca')
    _write(out.with_name(out.name + ".rank1"), [full["synth00001"]])
    _write(out, [full["synth00003"]])
    main(_narration_args(parent, tmp_path / "r1", out, "--trainer.enable_progress_bar=false"))
    _assert_complete(out, root)
    assert not list(out.parent.glob("narration.jsonl.rank*"))
    assert read_store(out)[0]["video_id"] == "synth00003"  # the store is appended to, never rewritten
    assert {r["video_id"]: r["captions"] for r in read_store(out)} == {k: v["captions"] for k, v in full.items()}


def _run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_midway_then_restart_captions_every_video_exactly_once(synth: tuple[Path, Path], tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str]):
    parent, root = synth
    out = tmp_path / "store" / "narration.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    slow = ["--model.init_args.backend.init_args.delay_s=0.15", "--data.init_args.predict_batch_size=1"]
    proc = _run(_narration_args(parent, tmp_path / "run1", out, *slow), env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and out.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + (proc.stdout.read() if proc.stdout
                                                                                 else "")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = read_store(out)
    assert 2 <= len(before) < 8
    with out.open("ab") as fh:  # what a write cut by the kill would leave
        fh.write(b'{"video_id": "synth00007", "kind": "narration", "capt')
    capfd.readouterr()
    main(_narration_args(parent, tmp_path / "run2", out))  # the restart (in-process: saves the import time)
    log = capfd.readouterr().err
    assert "dropped a torn last line" in log
    assert f"{len(before)} of 8 videos already captioned, {8 - len(before)} to go" in log
    _assert_complete(out, root)
    assert read_store(out)[:len(before)] == before


def stub_run(folder: Path, kind: str = "multi") -> tuple[Any, Any]:
    """The trainer and captioner a single-process ``predict`` run gives the writer's hooks (what they read of them)."""
    data = SimpleNamespace(root=folder, predict_exclude=set(), predict_videos=[])
    trainer = SimpleNamespace(global_rank=0, world_size=1, is_global_zero=True, datamodule=data,
                              strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))
    return trainer, SimpleNamespace(kind=kind, prompt="describe")


def write_run(folder: Path, records: list[dict]) -> CaptionWriter:
    """One writer run over ``records`` into ``folder/store.jsonl``: setup, one batch, teardown."""
    writer = CaptionWriter("store.jsonl")
    trainer, module = stub_run(folder)
    writer.setup(trainer, module, "predict")
    writer.write_on_batch_end(trainer, module, records, None, None, 0, 0)
    writer.teardown(trainer, module, "predict")
    return writer


@given(data=st.data())
def test_generated_malformed_stores_stop_the_writer_clearly_or_are_repaired_only_at_the_tail(
        data: st.DataObject) -> None:
    """The writer's start on a store with one drawn mutation: one of the suite's errors naming the store, which is
    then unchanged, or a start that skips exactly the records of its kind and leaves the store cut back to its whole
    lines (nothing but a torn tail removed)."""
    mutated = data.draw(mutated_jsonl(caption_store_bytes()), label="store")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = folder / "store.jsonl"
        store.write_bytes(mutated)
        writer = CaptionWriter("store.jsonl")
        trainer, module = stub_run(folder)
        try:
            writer.setup(trainer, module, "predict")
        except Exception as exc:
            assert is_clear_error(exc, "store.jsonl"), f"{type(exc).__name__}: {exc}"
            assert store.read_bytes() == mutated
        else:
            assert store.read_bytes() == repaired_bytes(mutated, store)
            multi = {r["video_id"] for r in read_jsonl(store) if r["kind"] == "multi"}
            assert trainer.datamodule.predict_exclude == multi
        assert sorted(p.name for p in folder.iterdir()) == ["store.jsonl"]


SURROGATE_TEXT = st.text(st.characters(categories=["Cs", "Ll", "Lo", "So", "Zs"]), min_size=1, max_size=8)


@given(texts=st.lists(SURROGATE_TEXT, min_size=1, max_size=4))
def test_generated_captions_with_lone_surrogates_are_written_marked_and_resumable(texts: list[str]) -> None:
    """Captions an API returned, lone surrogates included: every record is written (each surrogate a U+FFFD, counted
    in replaced_surrogates), the store is UTF-8, and the next run's start reads it and skips those videos."""
    records = [caption_record(f"video{k}", text=f"x{text}") for k, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_run(folder, records)
        written = [json.loads(line) for line in (folder / "store.jsonl").read_bytes().decode("utf-8").splitlines()]
        assert [r["video_id"] for r in written] == [r["video_id"] for r in records]
        for rec, out in zip(records, written, strict=True):
            lone = sum(0xD800 <= ord(ch) <= 0xDFFF for c in rec["captions"] for ch in c)
            joined = sum(c.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").count("\ufffd")
                         for c in rec["captions"])
            assert out.get("replaced_surrogates", 0) == joined <= lone
            assert all(c.encode("utf-8") for c in out["captions"])
        trainer, module = stub_run(folder)
        CaptionWriter("store.jsonl").setup(trainer, module, "predict")
        assert trainer.datamodule.predict_exclude == {r["video_id"] for r in records}


def test_resume_is_not_stopped_by_a_caption_the_loader_would_refuse(tmp_path: Path) -> None:
    """An empty caption a backend returned is the loader's to report (naming the line, at training time); the writer's
    resume still reads the store, skips that video and goes on, instead of failing on every restart."""
    _write(tmp_path / "store.jsonl", [{**caption_record("video0"), "captions": [""]}, caption_record("video1")])
    trainer, module = stub_run(tmp_path)
    CaptionWriter("store.jsonl").setup(trainer, module, "predict")
    assert trainer.datamodule.predict_exclude == {"video0", "video1"}
    (tmp_path / "store.jsonl").write_text('{"video_id": 7, "kind": "multi"}\n')  # no usable id: named, not guessed
    with pytest.raises(ValueError, match=r"store\.jsonl:1: not a caption record"):
        CaptionWriter("store.jsonl").setup(*stub_run(tmp_path), "predict")


def test_a_video_whose_file_name_is_not_utf8_is_refused_before_captioning(tmp_path: Path) -> None:
    """An undecodable file name becomes an id with lone surrogates: replacing them would store the video under another
    id (captioned again on every resume), so the writer refuses it up front, naming the file."""
    from datamodules.annotations import VideoEntry

    trainer, module = stub_run(tmp_path)
    name = os.fsdecode(b"clip\xff.mp4")
    trainer.datamodule.predict_videos = [VideoEntry("fine", tmp_path / "fine.mp4"),
                                         VideoEntry(name[:-4], tmp_path / name)]
    with pytest.raises(ValueError, match=r"1 video\(s\) have file names that are not UTF-8 text, .*clip\\xff\.mp4"):
        CaptionWriter("store.jsonl").setup(trainer, module, "predict")

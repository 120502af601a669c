"""Safe to share (docs/reference/security.md), part B: hostile inputs, torn files and the test set-up. One test per
finding, named after it; each failed on the code before the fix (the project's history records how). The property-based
suites live next to the modules they test (tests/datamodules/test_annotations.py, test_captions.py, test_jsonl.py,
tests/callbacks/test_caption_writer.py, tests/experiments/test_import_captions.py, test_csi.py)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from callbacks.caption_writer import CaptionWriter
from datamodules import SynthVTR
from experiments import import_captions
from experiments.care_dpo import pipeline as care_pipeline
from experiments.csi.cli import run_csi
from experiments.csi.engineers import PromptEngineer, RoundContext, ScoredPrompt
from experiments.csi.score import SentenceEmbedder
from experiments.import_captions import CaptionImportError
from lightning_modules.captioning import Simulated
from tests import browser_helpers
from tests.malformed_inputs import CASES, caption_record, run_case, write_annotations
from tests.run_helpers import REPO

SIZES = {"num_families": 4, "family_size": 2, "test_families": 1, "val_families": 1, "video_size": 32,
         "video_frames": 16, "num_frames": 4, "image_size": 32, "num_workers": 0}
INITIAL = "Generate 10 captions from different perspectives about this video."


# --------------------------------------------------------------------------------------------- finding 6
class Multibyte(PromptEngineer):
    """Proposes prompts with multi-byte characters, so a round's line can be torn inside one."""

    @property
    def name(self) -> str:
        return "multibyte"

    def propose(self, history: Sequence[ScoredPrompt], round_index: int, num_captions: int,
                context: RoundContext | None = None) -> str:
        return f"{INITIAL} Décris chaque détail, 漢字 {round_index}."


def _rounds(log: Path) -> list[int]:
    """The round numbers of the log, every line parsed (a glued or torn line fails here)."""
    return [json.loads(line)["round"] for line in log.read_bytes().decode("utf-8").splitlines()]


def test_finding_6_csi_resumes_after_a_torn_round_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSI run killed while writing a round, resumed: before the fix the next round was glued onto the torn line
    (the resume after that failed) and a tear inside a multi-byte character raised a UnicodeDecodeError naming no
    file. Now the torn round is cut away and rerun, on a line of its own."""
    root = tmp_path / "synth"
    data = SynthVTR(root=str(root), **SIZES)
    data.generator_workers = 1
    data.prepare_data()
    out = tmp_path / "csi"
    evaluator = SentenceEmbedder()  # loaded once: each run below is a restart of the same command

    def run(rounds: int) -> None:
        run_csi(Simulated(hallucination_rate=0.0), Multibyte(), SynthVTR(root=str(root), **SIZES), evaluator,
                out=str(out), num_captions=3, probe_videos=2, max_rounds=rounds, patience=10, wandb_project=None)

    run(2)
    log = out / "rounds.jsonl"
    whole = log.read_bytes()
    last = whole[whole.rstrip(b"\n").rfind(b"\n") + 1:]
    log.write_bytes(whole[:len(whole) - len(last) + 40])  # killed 40 bytes into round 1's line (ASCII so far)
    run(3)
    assert _rounds(log) == [0, 1, 2]
    assert "dropped a torn last line" in capsys.readouterr().out
    whole = log.read_bytes()
    cut = whole.rfind("漢".encode()) + 1  # killed inside the last round's 漢
    log.write_bytes(whole[:cut])
    run(4)
    assert _rounds(log) == [0, 1, 2, 3]
    run(4)  # and the resume after that resume is clean too
    assert _rounds(log) == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------- finding 7
def _stub_run(folder: Path) -> tuple[Any, Any]:
    from types import SimpleNamespace

    data = SimpleNamespace(root=folder, predict_exclude=set(), predict_videos=[])
    trainer = SimpleNamespace(global_rank=0, world_size=1, is_global_zero=True, datamodule=data,
                              strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))
    return trainer, SimpleNamespace(kind="multi", prompt="describe")


def _narvid_args(root: Path, source: Path, out: Path, *extra: str) -> list[str]:
    return ["--format", "narvid", "--input", str(source), "--dataset", "msrvtt", "--root", str(root), "--out",
            str(out), "--allow-missing", *extra]


def test_finding_7_lone_surrogate_caption_is_written_marked_and_the_importer_leaves_no_temporary_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API's caption with a lone surrogate crashed the caption writer (UnicodeEncodeError) on every resume; now it
    is written with U+FFFD, counted in the record and warned about. The importer left its temporary file behind when
    writing failed; now a failed import leaves the store as it was and nothing beside it."""
    trainer, module = _stub_run(tmp_path)
    records = [caption_record("video0", text="a clip \ud83c then"), caption_record("video1")]
    writer = CaptionWriter("store.jsonl")
    writer.setup(trainer, module, "predict")
    with caplog.at_level(logging.WARNING, logger="callbacks.caption_writer"):
        writer.write_on_batch_end(trainer, module, records, None, None, 0, 0)
    writer.teardown(trainer, module, "predict")
    written = [json.loads(line) for line in (tmp_path / "store.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written[0]["captions"][0] == "a clip \ufffd then" and written[0]["replaced_surrogates"] == 2
    assert "replaced_surrogates" not in written[1]
    assert "video0" in caplog.text and "lone UTF-16 surrogate" in caplog.text
    resumed, module = _stub_run(tmp_path)
    CaptionWriter("store.jsonl").setup(resumed, module, "predict")  # the resume reads it
    assert resumed.datamodule.predict_exclude == {"video0", "video1"}

    root = write_annotations("msrvtt", tmp_path / "ds")
    out = tmp_path / "imported" / "s.jsonl"
    source = tmp_path / "narration.json"
    source.write_text('[{"video_file": "video0", "caption_1": "half an emoji \\ud83c"}]')
    with pytest.raises(CaptionImportError, match=r"narration\.json: \[0\]\.caption_1 holds a lone UTF-16 surrogate"):
        import_captions.main(_narvid_args(root, source, out))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    source.write_text(json.dumps([{"video_file": "video0", "caption_1": "fine"}]))
    import_captions.main(_narvid_args(root, source, out))
    before = out.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    source.write_text(json.dumps([{"video_file": "video1", "caption_1": "also fine"}]))
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        import_captions.main(_narvid_args(root, source, out, "--append"))
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["s.jsonl"]


# --------------------------------------------------------------------------------------------- finding 12
def test_finding_12_malformed_annotation_files_give_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    """A report of 68 malformed files, reproduced with our own 74 malformed annotation sets (tests/malformed_inputs.py:
    non-UTF-8 and UTF-16 files, wrong JSON types, csv fields over the csv module's limit, deeply nested JSON,
    null/number/list captions, duplicate keys, sen_ids and video entries, video ids that lead outside the video folder
    by '..', an absolute path or a symlink, VATEX enCap as an object or a string, ...). Before the fix 21 gave a clear
    error naming the file, 23 failed without naming it and 30 were accepted; every one must now be refused naming
    the file."""
    results = {case.name: run_case(case, tmp_path) for case in CASES}
    assert len(results) == 74
    assert {name: result for name, result in results.items() if result != "clear"} == {}


# --------------------------------------------------------------------------------------------- finding 13
def test_finding_13_import_captions_names_the_file_repairs_a_torn_store_refuses_duplicates_and_bad_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import-captions: a non-UTF-8 input named no file; --append onto a store torn inside a character raised a
    traceback; duplicate JSON keys silently kept the last value; a malformed --set raised a traceback."""
    root = write_annotations("msrvtt", tmp_path / "ds")
    out = tmp_path / "s.jsonl"
    source = tmp_path / "narration.json"
    source.write_bytes(b'[{"video_file": "video0", "caption_1": "caf\xe9"}]')  # Latin-1
    with pytest.raises(CaptionImportError, match=r"narration\.json: not UTF-8 \(byte b'\\xe9'"):
        import_captions.main(_narvid_args(root, source, out))

    source.write_text('[{"video_file": "video0", "caption_1": "first", "caption_1": "second"}]')
    with pytest.raises(CaptionImportError, match=r"narration\.json: key 'caption_1' appears twice"):
        import_captions.main(_narvid_args(root, source, out))
    assert not out.exists()

    store = json.dumps(caption_record("video3", "narration", "漢字")).encode() + b"\n"
    out.write_bytes(store + '{"video_id": "video4", "captions": ["漢'.encode()[:-1])  # killed inside 漢
    source.write_text(json.dumps([{"video_file": "video0", "caption_1": "a", "caption_2": "b"}]))
    import_captions.main(_narvid_args(root, source, out, "--append"))
    lines = out.read_bytes().split(b"\n")
    assert lines[0] + b"\n" == store and [json.loads(x)["video_id"] for x in lines if x] == ["video3", "video0"]

    for option, message in [("train_csv", r"--set 'train_csv': expected KEY=VALUE"),
                            ("nonsense=1", r"--set: .*nonsense.*MSRVTT takes: .*train_csv"),
                            ("val_videos=many", r"--set: .*val_videos.*Expected a <class 'int'>"),
                            ("root=/elsewhere", r"--set root: set it with --root")]:
        with pytest.raises(SystemExit) as exit_info:
            import_captions.main(_narvid_args(root, source, tmp_path / "other.jsonl", "--set", option))
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err), option
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "narration.json", "s.jsonl"]  # no temporary file


# --------------------------------------------------------------------------------------------- finding 14
def _pipeline(tmp_path: Path) -> care_pipeline.Pipeline:
    configs = ("configs/care_dpo/captioner_sft_synthvtr.yaml", "configs/care_dpo/captioner_dgdpo_synthvtr.yaml",
               "configs/care_dpo/caption_synthvtr.yaml", "configs/experiments/care_dpo_synthvtr.yaml")
    return care_pipeline.Pipeline(*configs, work=str(tmp_path / "work"), out=str(tmp_path / "out"),
                                  sample_config="configs/care_dpo/sample_synthvtr.yaml",
                                  score_config="configs/care_dpo/score_synthvtr.yaml")


def test_finding_14_care_dpo_stage_markers_are_atomic_and_an_empty_one_means_not_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An empty done.json left by a kill failed every restart (JSONDecodeError); now the stage counts as not done
    (warned) and runs again. The marker is written through a temporary file and a rename, so a kill leaves no partial
    marker and no temporary file."""
    pipeline = _pipeline(tmp_path)
    run_dir = tmp_path / "work" / "sft"
    calls: list[list[str]] = []

    def fit(kind: str, args: list[str], log_path: Path) -> None:  # main.py fit, as far as the markers care
        calls.append(args)
        last = run_dir / "run" / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_bytes(b"checkpoint")

    monkeypatch.setattr(pipeline, "_main", fit)
    run_dir.mkdir(parents=True)
    (run_dir / "done.json").write_text("")  # what a kill during the old write_text left
    with caplog.at_level(logging.WARNING, logger=care_pipeline.__name__):
        pipeline._fit("sft", "sft", run_dir, {}, test=False)
    assert len(calls) == 1 and "stage marker is empty or torn" in caplog.text
    marker = json.loads((run_dir / "done.json").read_text())
    assert set(marker) == {"seconds", "checkpoint", "digest"}
    _pipeline(tmp_path)._fit("sft", "sft", run_dir, {}, test=False)  # done now: skipped
    assert len(calls) == 1

    (run_dir / "done.json").unlink()

    def killed(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise KeyboardInterrupt  # the kill lands between writing the marker's bytes and publishing them

    again = _pipeline(tmp_path)
    monkeypatch.setattr(again, "_main", fit)
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        again._fit("sft", "sft", run_dir, {}, test=False)
    monkeypatch.undo()
    assert not (run_dir / "done.json").exists()
    assert [p.name for p in run_dir.iterdir() if "done" in p.name] == []


# --------------------------------------------------------------------------------------------- finding 16
def test_finding_16_no_test_installs_chromium_make_test_sets_it_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/browser_helpers.py ran `apt-get update && apt-get install chromium` from inside pytest. Installing is
    set-up: the Makefile's chromium stamp, a prerequisite of `make test`; a browser test without Chromium skips with
    a reason naming `make test`, and nothing is run to install it."""
    ran: list[Any] = []

    def no_run(*args: Any, **kwargs: Any) -> None:
        ran.append(args)
        raise AssertionError(f"a test ran {args}")

    real_which = shutil.which
    # no Chromium on this machine, but apt-get and root: where the old helper went on to install it
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if "chrom" in name else real_which(name, *a, **k))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(subprocess, "run", no_run)
    monkeypatch.setattr(subprocess, "call", no_run)
    monkeypatch.setattr(subprocess, "check_call", no_run)
    binary, why = browser_helpers.find_chromium()
    assert binary is None and ran == [] and "`make test`" in why
    makefile = (REPO / "Makefile").read_text()
    test_rule = re.search(r"^test: (.*)$", makefile, re.M)
    assert test_rule is not None and "$(CHROMIUM_STAMP)" in test_rule.group(1).split()
    stamp_rule = makefile[makefile.index("$(CHROMIUM_STAMP):"):]
    assert "apt-get install -y -q chromium" in stamp_rule and "/usr/bin/chromium" in stamp_rule
    assert "apt-get" not in (REPO / ".ci" / "run").read_text()  # .ci/run reaches it through `make test`
    installer = re.compile(r"""\[\s*["'](apt-get|apt|dpkg)["']|["']-m["'],\s*["']pip["']|os\.system\(""")
    # tests/test_install.py is the packaging test: it builds vtr's own wheel and installs it into a throwaway venv
    # under tmp_path, offline (--no-index) and without dependencies, so nothing reaches this machine's environment
    packaging = REPO / "tests" / "test_install.py"
    pip_calls = re.findall(r"""["']-m["'],\s*["']pip["'][^\]]*""", packaging.read_text())
    assert pip_calls and all("--no-index" in call for call in pip_calls), pip_calls
    for path in (REPO / "tests").rglob("*.py"):  # no other test or helper runs an installer either
        assert path == packaging or not installer.search(path.read_text()), path


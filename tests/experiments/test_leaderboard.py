"""``python -m experiments.leaderboard``: the dry run lists the whole grid with each cell's shipped command; a tiny real
run of two cells (CLIP4Clip meanP and seqTransf, seed 0, the tiny SynthVTR as ``--data`` overrides) registers them with
their costs; ``--resume`` skips the finished cell and reruns one a killed attempt left unfinished (killing that
attempt's leftover process first); ``collect`` and the README table; refusals."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from experiments.leaderboard import data as data_copy
from experiments.leaderboard.cli import main
from experiments.leaderboard.plan import (
    CARE_CONFIG,
    CONFIGURATION_BY_NAME,
    METHOD_BY_NAME,
    METHODS,
    SEEDS,
    STEPS,
    Settings,
)
from experiments.leaderboard.state import TASK_ENV, LeaderboardError, new_attempt, task_id
from experiments.tables.cli import main as readme

TINY = [f"--data={k}={v}" for k, v in {"num_families": 4, "family_size": 2, "test_families": 1, "val_families": 1,
                                        "video_size": 32, "video_frames": 16, "num_frames": 4, "image_size": 32,
                                        "num_workers": 0, "generator_workers": 1}.items()]


def _cells(out: str) -> dict[tuple[str, str, int], str]:
    """``(configuration, method, seed) -> command`` of every ``[cell ...]`` entry of a dry run."""
    found = re.findall(r"^\[cell (\w+)/(\w+)_s(\d+)\][^\n]*\n    (.+)$", out, re.M)
    return {(conf, method, int(seed)): cmd for conf, method, seed, cmd in found}


def test_dry_run_lists_every_cell_step_and_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    assert main(["run", "--dry-run", f"--work={work}"]) == 0
    out = capsys.readouterr().out
    cells = _cells(out)
    assert set(cells) == {(c, m.name, s) for c in ("default", "hard") for m in METHODS for s in SEEDS}
    assert len(cells) == 48 and out.count("[cell ") == 48
    assert sorted(re.findall(r"^\[step (\w+)/(\w+)\]", out, re.M)) == sorted(
        (c, s.name) for c in ("default", "hard") for s in STEPS)
    assert len(re.findall(r"^\[data (default|hard)\] SynthVTR copy ", out, re.M)) == 2
    root = f"--data.init_args.root={work / 'data'}"
    for (conf, method, seed), cmd in cells.items():
        m = METHOD_BY_NAME[method]
        hard = "configs/data/synthvtr_hard.yaml" in cmd
        assert hard == (conf == "hard"), (conf, method, cmd)
        if m.kind == "fit":
            # the shipped config first, the configuration's data config after it, the leaderboard's root last
            assert cmd.startswith(f"python main.py fit --config {m.config}") and cmd.endswith(root)
            assert f"--seed_everything={seed}" in cmd and "callbacks.run_costs.RunCosts" in cmd
            assert all(arg in cmd for arg in m.args)
        else:
            assert cmd.startswith(f"python -m experiments.care_dpo --config {CARE_CONFIG} --seed={seed}")
            assert f"--headline={m.headline}" in cmd and root in cmd
    assert not work.exists()  # a dry run writes nothing


def test_only_selects_cells_and_bad_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = f"--work={tmp_path / 'work'}"
    assert main(["run", "--dry-run", work, "--only", "method=narvid", "--only", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert set(_cells(out)) == {("default", "narvid", 1), ("hard", "narvid", 1)}
    assert re.findall(r"^\[step (\w+/\w+)\]", out, re.M) == ["default/narration", "hard/narration"]
    for bad, message in ((["--only", "method=nope"], "method 'nope': unknown"),
                         (["--only", "colour=red"], "expected configuration=..., method=... or seed=..."),
                         (["--only", "seed=7"], "seed 7: the leaderboard's seeds are 0, 1, 2"),
                         (["--data", "root=/elsewhere"], "the data root is the leaderboard's own")):
        assert main(["run", "--dry-run", work, *bad]) == 2
        assert message in capsys.readouterr().err


def _rows(readme_path: Path) -> dict[str, dict[str, str]]:
    lines = [line for line in readme_path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [dict(zip(header, [c.strip() for c in line.strip("|").split(" | ")], strict=True)) for line in lines[2:]]
    return {r["method"]: r for r in rows}


def test_two_tiny_cells_register_resume_and_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    common = [f"--work={work}", *TINY, "--arg=--trainer.max_epochs=1", "--only=configuration=default",
              "--only=seed=0", "--allow-dirty"]
    assert main(["run", *common, "--only=method=clip4clip_meanP"]) == 0
    registry = work / "registry" / "default"
    meanp = registry / "clip4clip_meanP_s0"
    costs = json.loads((meanp / "costs.json").read_text())
    assert costs["trainable_params"] > 0 and costs["train_step_ms"] > 0 and costs["train_steps"] >= 1
    assert costs["eval"]["gallery_videos"] == 1000 and costs["eval"]["ms_per_query"] > 0
    assert costs["captions"]["per_video"] == 0 and costs["wall_s"]["total"] == costs["wall_s"]["cell"] > 0
    assert costs["machine"]["cpus"] >= 1 and costs["machine"]["state"] in ("shared", "not oversubscribed")
    # registered in the compact format, tested on the recorded copy
    record = json.loads((meanp / "metrics.json").read_text())
    copy = json.loads((work / "default" / "data.json").read_text())
    assert record["registry"]["registered_by"] == "experiments.leaderboard" and (meanp / "queries.npz").is_file()
    assert record["data"]["generator"]["content_sha256"] == copy["content_sha256"] == costs["data"]["content_sha256"]
    # the same cells again without --resume: refused, nothing touched
    assert main(["run", *common, "--only=method=clip4clip_meanP"]) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err

    # seqTransf as a killed attempt leaves it: a run folder without test metrics, a registry folder without costs.json
    # and one of its processes still running
    partial = work / "default" / "runs" / "clip4clip_seqTransf_s0" / "version_0"
    partial.mkdir(parents=True)
    (partial / "left_by_the_killed_attempt").write_text("")
    half = registry / "clip4clip_seqTransf_s0"
    half.mkdir()
    (half / "metrics.json").write_text("{}")
    killed = new_attempt(task_id(work, "default/clip4clip_seqTransf_s0"))
    orphan = subprocess.Popen(["sleep", "600"], env={**os.environ, TASK_ENV: killed})
    # a process of the same cell in another work folder (another leaderboard) is not this one's to kill
    other = subprocess.Popen(["sleep", "600"], env={**os.environ, TASK_ENV: new_attempt(task_id(
        tmp_path / "other", "default/clip4clip_seqTransf_s0"))})
    try:
        finished = (meanp / "costs.json").read_bytes(), (meanp / "costs.json").stat().st_mtime_ns
        assert main(["run", "--resume", *common, "--only=method=clip4clip_meanP,clip4clip_seqTransf"]) == 0
        out = capsys.readouterr().out
        assert orphan.wait(timeout=60) == -9   # the earlier attempt's process was killed before the rerun
        assert other.poll() is None
    finally:
        for proc in (orphan, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "skip default/clip4clip_meanP_s0: finished" in out and "start default/clip4clip_seqTransf_s0" in out
    assert ((meanp / "costs.json").read_bytes(), (meanp / "costs.json").stat().st_mtime_ns) == finished
    assert not (partial / "left_by_the_killed_attempt").exists()
    assert (half / "costs.json").is_file() and "registry" in json.loads((half / "metrics.json").read_text())
    status = json.loads((work / "status.json").read_text())
    assert status["cells"]["default/clip4clip_seqTransf_s0"]["status"] == "ran"

    # collect, then the README table from it
    results = tmp_path / "results" / "leaderboard"
    assert main(["collect", f"--work={work}", f"--out={results}", "--not-run-reason=only two cells in a test"]) == 0
    summary = json.loads((results / "leaderboard.json").read_text())
    states = [(c["configuration"], c["cell"], c["status"]) for c in summary["cells"]]
    assert ("default", "clip4clip_meanP_s0", "done") in states and len(states) == 48
    assert sum(s == "done" for _, _, s in states) == 2
    assert {c["reason"] for c in summary["cells"] if c["status"] == "done"} == {None}
    assert {c["reason"] for c in summary["cells"] if c["status"] == "not run"} == {"only two cells in a test"}
    assert summary["settings"]["data"] == [t[len("--data="):] for t in TINY]
    assert str(work) not in (results / "leaderboard.json").read_text()  # no machine path in the committed summary
    readme_path = tmp_path / "README.md"
    readme_path.write_text("# x\n\n<!-- leaderboard-table: results/leaderboard -->\n<!-- /leaderboard-table -->\n")
    assert readme([str(readme_path), "--root", str(tmp_path)]) == 0
    rows = _rows(readme_path)
    assert set(rows) == {"CLIP4Clip meanP", "CLIP4Clip seqTransf"}
    delta = rows["CLIP4Clip meanP"]["ΔR@1 vs CLIP4Clip seqTransf [95 % CI]"]
    assert re.fullmatch(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] \(1 seed pair\)", delta), delta
    assert rows["CLIP4Clip seqTransf"]["ΔR@1 vs CLIP4Clip seqTransf [95 % CI]"] == "reference"
    assert rows["CLIP4Clip meanP"]["holds on both"] == "not decided: no comparison on hard"
    assert rows["CLIP4Clip meanP"]["leakage (computed)"] == "none"
    assert float(rows["CLIP4Clip meanP"]["eval / query, 1k videos (ms)"]) > 0
    text = " ".join(readme_path.read_text().split())
    assert "Missing 46 of 48 cells: 46 not run (default: clip4clip_meanP seed 1,2" in text
    assert text.split("Missing 46 of 48 cells: ")[1].split(".")[0].endswith("): only two cells in a test")
    assert readme([str(readme_path), "--check", "--root", str(tmp_path)]) == 0

    # the copy is checked before every cell: an edited video, or a manifest other than the recorded one, is refused
    settings = Settings(work, [t[len("--data="):] for t in TINY])
    video = next(Path(copy["root"], "videos").glob("*.mp4"))
    original = video.read_bytes()
    video.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(LeaderboardError, match=rf"does not match its manifest .*1 differ \(first: videos/{video.name}"):
        data_copy.check(settings, CONFIGURATION_BY_NAME["default"])
    video.write_bytes(original)
    data_copy.check(settings, CONFIGURATION_BY_NAME["default"])
    (work / "default" / "data.json").write_text(json.dumps({**copy, "content_sha256": "0" * 64}))
    with pytest.raises(LeaderboardError, match="recorded 000000000000: the copy was regenerated or edited"):
        data_copy.check(settings, CONFIGURATION_BY_NAME["default"])

"""Sweep files: W&B-valid shape, the local grid runner's expansion, and every run's command line parses; the
runner itself (--resume, --jobs, failure summary, run names) on a tiny fake program instead of main.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from jsonargparse import CLI

from experiments import sweep as runner
from experiments.sweep import MAX_NAME, command_for, expand_grid, run_name, run_names, validate_sweep
from main import main
from tests.run_helpers import REPO

SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))

# Stands in for main.py: writes <save_dir>/<name>/version_N/test/metrics.json from the --trainer.logger argument
# (like the CSVLogger), sleeps, and fails for x=bad while FAKE_BAD_FAILS is set; x=slow sleeps FAKE_SLOW more.
FAKE_PROGRAM = """
import json, os, sys, time
from pathlib import Path

start = time.time()
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
logger = json.loads(args["trainer.logger"])[0]["init_args"]
print(f"fake run {logger['name']} starts", flush=True)
run = Path(logger["save_dir"]) / logger["name"]
version = 0
while (run / f"version_{version}").exists():
    version += 1
run = run / f"version_{version}"
(run / "checkpoints").mkdir(parents=True)
(run / "checkpoints" / "last.ckpt").write_text("partial")
if args["x"] == "slow":
    time.sleep(float(os.environ.get("FAKE_SLOW", "0")))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.2")))
if args["x"] == "bad" and os.environ.get("FAKE_BAD_FAILS"):
    for i in range(8):
        print(f"fake log line {i}")
    print("RuntimeError: fake failure for x=bad", file=sys.stderr)
    sys.exit(3)
r1 = {"a": 10.0, "b": 20.0, "bad": 30.0, "slow": 40.0}.get(args["x"], 0.0) + int(args.get("seed_everything", 0))
(run / "metrics.csv").write_text(f"epoch,step,val/t2v_R1,train/loss\\n0,1,{r1 - 1},\\n0,1,,0.5\\n1,2,{r1 + 1},\\n")
(run / "test").mkdir()
record = {"metrics": {"t2v_R1": r1, "t2v_R5": 50.0, "v2t_R1": 5.0, "rsum": 100.0},
          "device": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(),
          "git_sha": "f" * 40, "git_dirty": args["x"] == "b", "git_diff_sha256": "d" * 64 if args["x"] == "b" else None}
(run / "test" / "metrics.json").write_text(json.dumps(record))
"""


def fake_sweep(tmp_path: Path, values: list[str], seeds: tuple[int, ...] = (0,)) -> Path:
    program = tmp_path / "fake_program.py"
    program.write_text(FAKE_PROGRAM)
    sweep = {"name": "fake", "program": str(program), "method": "grid",
             "metric": {"name": "val/t2v_R1", "goal": "maximize"},
             "command": ["${env}", "${interpreter}", "${program}", "fit", "${args}"],
             "parameters": {"x": {"values": values}, "seed_everything": {"values": list(seeds)}}}
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def summary(out: Path) -> dict[str, dict]:
    return {r["run"]: r for r in json.loads((out / "sweep_summary.json").read_text())}


def record(out: Path, name: str) -> dict:
    return json.loads((out / name / "version_0" / "test" / "metrics.json").read_text())


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU lookup (nvidia-smi / torch) unless a test sets CUDA_VISIBLE_DEVICES itself."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for var in ("FAKE_BAD_FAILS", "FAKE_SLOW", "FAKE_SLEEP"):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------------ the grid and the command line
def test_expand_grid_and_command() -> None:
    sweep = {"program": "main.py", "method": "grid",
             "command": ["${env}", "${interpreter}", "${program}", "fit", "${args}"],
             "parameters": {"a.b": {"values": [1, 2]}, "c": {"value": True}, "d": {"values": ["x", "y", "z"]}}}
    grid = expand_grid(sweep)
    assert len(grid) == 6 and grid[0] == {"a.b": 1, "c": True, "d": "x"}
    cmd = command_for(sweep, grid[-1], ["--extra=1"])
    # the shipped sweeps' main.py is the suite's CLI, run as a module so that it works outside a checkout too
    assert cmd[:3] == [sys.executable, "-m", "vtr"]
    assert cmd[3:] == ["fit", "--a.b=2", "--c=true", "--d=z", "--extra=1"]
    # any other program is a file relative to the working directory, as W&B's agent runs it
    assert command_for({**sweep, "program": "train.py"}, grid[0], [])[:2] == [sys.executable, "train.py"]
    with pytest.raises(ValueError, match="grid only"):
        expand_grid({"method": "bayes", "parameters": {}})
    with pytest.raises(ValueError, match="not supported by the local runner"):
        command_for({**sweep, "command": ["${program}", "${args}", "${args_json_file}"]}, grid[0], [])


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_runs_parse(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] == "grid" and "${args}" in sweep["command"] and sweep["metric"]["name"]
    grid = expand_grid(sweep)
    assert len(set(run_names(grid))) == len(grid)
    for params in grid:
        if "config" in params:
            assert (REPO / params["config"]).is_file(), params["config"]
    logger = ('--trainer.logger=[{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": '
              '{"save_dir": "runs/x", "name": "cell"}}]')  # what the local runner adds
    cmd = command_for(sweep, grid[-1], [logger])
    if "experiments.care_dpo" in cmd:  # the CaRe-DPO pipeline's own CLI
        from experiments.care_dpo.cli import run

        with pytest.raises(SystemExit) as exit_info:
            CLI(run, as_positional=False, args=[*cmd[cmd.index("experiments.care_dpo") + 1:], "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["trainer"]["logger"][0]["init_args"]["name"] == "cell"
        return
    subcommand_at = cmd.index("fit")
    with pytest.raises(SystemExit) as exit_info:
        main([*cmd[subcommand_at:], "--print_config"])
    assert exit_info.value.code == 0
    capsys.readouterr()


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_files_are_valid_wandb_sweep_configs(path: Path) -> None:
    """Validated against W&B's documented sweep keys (experiments.sweep.validate_sweep): wandb 0.31 ships no
    offline validator of its own (wandb_controller calls ``sweeps.schema_violations_from_proposed_config`` from
    the optional ``sweeps`` package, ``wandb[sweeps]``, which is not installed; ``wandb sweep`` validates on the
    server)."""
    assert validate_sweep(yaml.safe_load(path.read_text())) == []


def test_validator_names_the_problems() -> None:
    good = next(sweep for sweep in (yaml.safe_load(p.read_text()) for p in SWEEPS) if "program" in sweep)
    assert validate_sweep(good) == []
    assert "method must be one of" in validate_sweep({**good, "method": "grd"})[0]
    assert "metric.goal" in validate_sweep({**good, "metric": {"name": "val/x", "goal": "max"}})[0]
    assert "unknown macro '${argz}'" in validate_sweep({**good, "command": ["${program}", "${argz}"]})[0]
    assert "no 'program'" in validate_sweep({k: v for k, v in good.items() if k != "program"})[0]
    assert "'values' must be a non-empty list" in validate_sweep({**good, "parameters": {"a": {"values": []}}})[0]
    assert "needs 'value', 'values'" in validate_sweep({**good, "parameters": {"a": {"min": 1}}})[0]
    assert validate_sweep({**good, "parameters": {"a": {"distribution": "log_uniform_values", "min": 1e-5,
                                                        "max": 1e-3}}}) == []
    assert "unknown top-level key 'paramters'" in validate_sweep({**good, "paramters": {}})[0]


def test_run_names_are_unique_and_collisions_fail_loudly() -> None:
    long_a, long_b = "a" * 200 + "1", "a" * 200 + "2"
    names = run_names([{"model.init_args.caption_file": long_a}, {"model.init_args.caption_file": long_b}])
    assert names[0] != names[1] and all(len(n) == MAX_NAME for n in names)
    assert names[0].startswith("caption_file=aaaa") and "~" in names[0]
    assert run_name({"seed_everything": 1}) == "seed_everything=1"  # short names are unchanged
    with pytest.raises(ValueError, match="grid rows 1 and 2 map to the same run name 'x=a_b'"):
        run_names([{"x": "a/b"}, {"x": "a_b"}])
    with pytest.raises(ValueError, match="grid rows 1 and 3"):
        run_names(expand_grid({"method": "grid", "parameters": {"x": {"values": [1, 2, 1]}}}))


# ------------------------------------------------------------------ the runner on a fake program
def test_failure_summary_then_resume_reruns_only_the_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, out = fake_sweep(tmp_path, ["a", "bad", "b"]), tmp_path / "out"
    monkeypatch.setenv("FAKE_BAD_FAILS", "1")
    assert runner.main([str(path), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| x=")}
    assert set(rows) == {"x=a,seed_everything=0", "x=bad,seed_everything=0", "x=b,seed_everything=0"}
    assert " | 3 | failed |" in rows["x=bad,seed_everything=0"]
    assert " | 0 | ran | 10.0 |" in rows["x=a,seed_everything=0"]
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert "| test t2v_R1 |" in header and "| val/t2v_R1 (max over epochs, metrics.csv) |" in header
    assert "| 11.00 |" in rows["x=a,seed_everything=0"]  # the best val/t2v_R1 of metrics.csv, not the test value
    failure = text.split("--- x=bad,seed_everything=0 failed (return code 3)")[1]
    assert "RuntimeError: fake failure for x=bad" in failure and "fake log line 7" in failure
    assert "fake log line 2" not in failure  # the tail only
    assert "2 of 3 runs finished, 1 failed" in text
    first = summary(out)
    assert first["x=bad,seed_everything=0"]["returncode"] == 3 and first["x=bad,seed_everything=0"]["metrics"] is None
    assert first["x=a,seed_everything=0"]["metrics"]["t2v_R1"] == 10.0
    for name, entry in first.items():
        assert Path(entry["log"]) == out / f"{name}.log" and entry["seconds"] >= 0.2
    # each run's recorded code state in the summary, and the launcher's own provenance beside it
    a, b = first["x=a,seed_everything=0"], first["x=b,seed_everything=0"]
    assert b["git_dirty"] is True and b["git_diff_sha256"] == "d" * 64 and a["git_dirty"] is False
    assert "git_sha" not in first["x=bad,seed_everything=0"]  # failed: no metrics.json to read it from
    launcher = json.loads((out / "sweep_provenance.json").read_text())
    assert {"git_sha", "git_dirty", "git_diff_sha256", "environment"} <= set(launcher)
    assert launcher["sweep"] == str(path)
    a_started = record(out, "x=a,seed_everything=0")["start"]

    monkeypatch.delenv("FAKE_BAD_FAILS")
    assert runner.main([str(path), "--out", str(out), "--resume"]) == 0
    text = capsys.readouterr().out
    assert f"skip x=a,seed_everything=0: {out}/x=a,seed_everything=0/version_0/test/metrics.json exists" in text
    assert "skip x=b,seed_everything=0" in text
    assert "rerun x=bad,seed_everything=0: deleted unfinished version_0 (no test/metrics.json)" in text
    assert text.count("] start ") == 1
    assert record(out, "x=a,seed_everything=0")["start"] == a_started
    second = summary(out)
    assert all(r["returncode"] == 0 and r["metrics"] for r in second.values())
    assert second["x=a,seed_everything=0"]["status"] == "skipped"
    assert second["x=a,seed_everything=0"]["seconds"] == first["x=a,seed_everything=0"]["seconds"]
    assert second["x=bad,seed_everything=0"]["status"] == "ran"
    assert sorted(p.name for p in (out / "x=bad,seed_everything=0").iterdir()) == ["version_0"]


def test_killed_sweep_resumed_ends_like_an_uninterrupted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_sweep(tmp_path, ["a", "slow", "b"])
    out = tmp_path / "killed"
    env = {**os.environ, "FAKE_SLOW": "120", "PYTHONPATH": str(REPO)}
    sweep = subprocess.Popen([sys.executable, "-m", "experiments.sweep", str(path), "--out", str(out)], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = out / "x=slow,seed_everything=0" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not partial.is_file() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its running child, mid-run
    sweep.wait()
    assert partial.is_file() and not (partial.parents[1] / "test").exists()
    assert not (out / "x=b,seed_everything=0").exists()

    assert runner.main([str(path), "--out", str(out), "--resume"]) == 0
    assert runner.main([str(path), "--out", str(tmp_path / "straight")]) == 0
    resumed, straight = summary(out), summary(tmp_path / "straight")
    assert list(resumed) == list(straight)
    for name in straight:
        assert resumed[name]["metrics"] == straight[name]["metrics"] and resumed[name]["returncode"] == 0
        assert sorted(p.name for p in (out / name).iterdir()) == ["version_0"]
        assert (out / name / "version_0" / "test" / "metrics.json").is_file()
    assert resumed["x=a,seed_everything=0"]["status"] == "skipped"
    assert resumed["x=slow,seed_everything=0"]["status"] == "ran"


def test_two_jobs_on_cpu_run_together_with_separate_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, out = fake_sweep(tmp_path, ["a", "b"]), tmp_path / "out"
    monkeypatch.setenv("FAKE_SLEEP", "1.5")
    assert runner.main([str(path), "--out", str(out), "--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 of 2 runs to do, 2 at a time;" in text and "fake run" not in text  # run output only in the logs
    a, b = record(out, "x=a,seed_everything=0"), record(out, "x=b,seed_everything=0")
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two runs did not overlap"
    assert a["device"] == b["device"] == ""  # CPU: CUDA_VISIBLE_DEVICES left as it was
    for name, other in (("x=a,seed_everything=0", "x=b"), ("x=b,seed_everything=0", "x=a")):
        log = (out / f"{name}.log").read_text()
        assert f"fake run {name} starts" in log and f"fake run {other}" not in log
    assert {r["metrics"]["t2v_R1"] for r in summary(out).values()} == {10.0, 20.0}


def test_jobs_get_one_gpu_each_round_robin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, out = fake_sweep(tmp_path, ["a", "b"], seeds=(0, 1, 2)), tmp_path / "out"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    assert runner.main([str(path), "--out", str(out), "--jobs", "3"]) == 0
    text = capsys.readouterr().out
    assert "--jobs 3 but 2 GPU(s): at most 2 runs at once" in text and "on CUDA devices 4,7" in text
    runs = [json.loads(p.read_text()) for p in out.glob("*/version_0/test/metrics.json")]
    assert len(runs) == 6 and {r["device"] for r in runs} == {"4", "7"}
    for one in runs:
        for two in runs:
            if one is not two and one["start"] < two["end"] and two["start"] < one["end"]:
                assert one["device"] != two["device"], "two concurrent runs shared a GPU"


def test_only_selects_grid_rows_and_keeps_full_grid_names(capsys: pytest.CaptureFixture[str]) -> None:
    sweep = REPO / "experiments" / "sweeps" / "narvid_table5_lambda.yaml"
    grid = expand_grid(yaml.safe_load(sweep.read_text()))
    assert runner.select_rows(grid, ["seed_everything=0"]) == [0, 3, 6, 9, 12]
    assert runner.select_rows(grid, ["hn_weight=0.5", "model.init_args.hn_weight=0.5", "seed_everything=2"]) == [5]
    with pytest.raises(ValueError, match="'seed' names 0 parameters"):
        runner.select_rows(grid, ["seed=0"])
    with pytest.raises(ValueError, match="no grid row matches"):
        runner.select_rows(grid, ["hn_weight=3"])
    assert runner.main([str(sweep), "--only", "seed_everything=1", "--dry-run", "--out", "unused"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "--only seed_everything=1: 5 of 15 grid rows"
    assert [line.split("]")[0] for line in lines[1:]] == ["[2/15", "[5/15", "[8/15", "[11/15", "[14/15"]
    assert all("--seed_everything=1" in line for line in lines[1:])

"""One caption step or one cell, run to the end in its own process (``python -m experiments.leaderboard step|cell``,
started by ``run``; by hand only to redo one).

A step runs its commands in order and then writes ``<work>/<configuration>/steps/<step>.done.json`` (its time, its
commands, the store's sha256 and captions per video). A cell checks the configuration's data copy, runs its command,
checks that the run tested on that copy, registers the run into ``<work>/registry/<configuration>/<cell>``
(``experiments.registry.register``: compact format, refusing a run made with uncommitted changes unless
``--allow-dirty``) and writes ``costs.json`` into that folder last: the cell is finished exactly when that file exists.

Either one first kills any process left by an earlier attempt (``state.kill_task``) and deletes what that attempt
left (a step: its caption store and its folder; a cell: its run folder and its registry folder), so a rerun starts
from scratch. On SIGTERM it kills its own processes before it exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path, PurePosixPath
from typing import Any

from datamodules.checksums import file_sha256
from experiments.leaderboard import data as data_copy
from experiments.leaderboard.costs import COSTS, captions_per_video, cell_costs, step_marker
from experiments.leaderboard.machine import LoadSampler
from experiments.leaderboard.plan import ROOT, Cell, Configuration, Settings, Step, cell_command, step_commands
from experiments.leaderboard.state import (
    TASK_ENV,
    LeaderboardError,
    attempt_task,
    file_lock,
    kill_task,
    new_attempt,
    read_json,
    task_id,
    write_json,
)


def step_task(conf: Configuration, step: Step) -> str:
    return f"{conf.name}/step-{step.name}"


def step_done(settings: Settings, conf: Configuration, step: Step) -> Path:
    return settings.steps_dir(conf) / f"{step.name}.done.json"


def cell_done(settings: Settings, cell: Cell) -> Path:
    return settings.registry(cell.configuration) / cell.name / COSTS


def is_finished(path: Path) -> bool:
    """A done marker or costs.json that exists and parses (a torn one counts as unfinished)."""
    try:
        return isinstance(read_json(path, "a done marker"), dict)
    except LeaderboardError:
        return False


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _run(cmd: list[str], attempt: str) -> int:
    """``cmd`` from the repository root with this attempt's task variable; on SIGTERM (the runner stopping) every
    process of the task is killed before this one exits."""
    task = attempt_task(attempt)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    proc = None
    try:
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, TASK_ENV: attempt}, stdin=subprocess.DEVNULL)
        return proc.wait()
    except (_Terminated, KeyboardInterrupt):
        kill_task(task)
        raise SystemExit(143) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc is not None and proc.poll() is None:
            kill_task(task)


def _start(settings: Settings, key: str) -> str:
    """This attempt's task variable, after killing every process of an earlier attempt of the same task."""
    task = task_id(settings.work, key)
    attempt = os.environ.get(TASK_ENV) or new_attempt(task)
    if not attempt.startswith(task + "@"):
        attempt = new_attempt(task)  # started by hand from inside another task
    killed = kill_task(task, keep=attempt)
    if killed:
        print(f"{key}: killed {len(killed)} process(es) of an earlier attempt: {killed}", flush=True)
    return attempt


def run_step(settings: Settings, conf: Configuration, step: Step) -> dict[str, Any]:
    """Run a caption step from scratch unless it is done; returns its marker."""
    done = step_done(settings, conf, step)
    if is_finished(done):
        return read_marker(done)
    attempt = _start(settings, step_task(conf, step))
    record = data_copy.check(settings, conf)
    store = Path(record["root"]) / step.store
    # what an earlier attempt left: the store, the writer's rank files and sidecars, the step's own folder
    for leftover in [store, *store.parent.glob(store.name + ".*")]:
        leftover.unlink(missing_ok=True)
    shutil.rmtree(settings.steps_dir(conf) / step.name, ignore_errors=True)
    sampler = LoadSampler().start()
    started = time.perf_counter()
    commands = step_commands(settings, conf, step)
    for cmd in commands:
        code = _run(cmd, attempt)
        if code != 0:
            sampler.stop()
            raise LeaderboardError(f"step {conf.name}/{step.name}: `{' '.join(cmd[1:4])} ...` exited with {code}")
    seconds = time.perf_counter() - started
    marker = {"step": step.name, "configuration": conf.name, "seconds": round(seconds, 1), "store": step.store,
              "store_sha256": file_sha256(store), **captions_per_video(store, step.kind), "simulated": step.simulated,
              "what": step.what, "commands": [" ".join(c[1:]) for c in commands], "machine": sampler.stop(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(done, marker)
    return marker


def read_marker(done: Path) -> dict[str, Any]:
    marker = read_json(done, "a done marker")
    if not isinstance(marker, dict):
        raise LeaderboardError(f"{done}: not a done marker; delete it and rerun with --resume")
    return marker


def _care_run(run_dir: Path, headline: str) -> tuple[Path, dict[str, Any]]:
    """The CaRe-DPO headline retriever's run folder (the pipeline's, below its work) and the pipeline summary."""
    summary = read_json(run_dir / "version_0" / "summary.json", "the CaRe-DPO pipeline summary")
    if not isinstance(summary, dict) or headline not in (summary.get("retrieval") or {}):
        raise LeaderboardError(f"{run_dir / 'version_0' / 'summary.json'}: missing or without the {headline!r} "
                               "retriever; the pipeline did not finish")
    metrics = Path(summary["retrieval"][headline]["path"])
    return metrics.parent.parent, summary


def run_cell(settings: Settings, cell: Cell, allow_dirty: bool = False) -> dict[str, Any]:
    """Run, check and register one cell from scratch unless it is finished; returns its cost record."""
    from experiments.registry.register import Plan, register
    from experiments.sweep import finished_metrics

    done = cell_done(settings, cell)
    if is_finished(done):
        return read_marker(done)
    attempt = _start(settings, cell.key)
    run_dir = settings.runs_dir(cell.configuration) / cell.name
    dest = done.parent
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    record = data_copy.check(settings, cell.configuration)
    for step in cell.method.needs:
        step_marker(settings, cell, step)
    sampler = LoadSampler().start()
    started = time.perf_counter()
    code = _run(cell_command(settings, cell), attempt)
    process_s = time.perf_counter() - started
    machine = sampler.stop()
    if code != 0:
        raise LeaderboardError(f"cell {cell.key}: its command exited with {code}")
    summary = None
    if cell.method.kind == "care":
        assert cell.method.headline is not None
        run, summary = _care_run(run_dir, cell.method.headline)
    else:
        metrics_path = finished_metrics(run_dir)
        if metrics_path is None:
            raise LeaderboardError(f"cell {cell.key}: {run_dir} holds no version_*/test/metrics.json; the fit did not "
                                   "test")
        run = metrics_path.parent.parent
    metrics = read_json(run / "test" / "metrics.json", "the cell's test metrics")
    if not isinstance(metrics, dict):
        raise LeaderboardError(f"{run / 'test' / 'metrics.json'}: missing; the cell did not test")
    data_copy.check_run(record, metrics, run / "test" / "metrics.json")
    costs = cell_costs(settings, cell, run / "run_costs.json", process_s, machine, record, summary)
    with file_lock(dest.parent / ".register.lock"):  # cells of one configuration share its test-set file
        register(Plan(run, dest, PurePosixPath(run.resolve().as_posix())), force=True, allow_dirty=allow_dirty,
                 registered_by="experiments.leaderboard")
    write_json(done, costs)
    return costs

"""The leaderboard's command line (``python -m experiments.leaderboard --help``)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.leaderboard import data as data_copy
from experiments.leaderboard import plan
from experiments.leaderboard.plan import (
    CONFIGURATION_BY_NAME,
    CONFIGURATIONS,
    METHOD_BY_NAME,
    METHODS,
    REFERENCE,
    ROOT,
    SEEDS,
    STEP_BY_NAME,
    Cell,
    Configuration,
    PlanError,
    Settings,
    Step,
)
from experiments.leaderboard.state import (
    TASK_ENV,
    LeaderboardError,
    new_attempt,
    read_json,
    task_id,
    work_lock,
    write_json,
)
from experiments.leaderboard.tasks import (
    cell_done,
    is_finished,
    run_cell,
    run_step,
    step_done,
    step_task,
)
from experiments.results.errors import ReportError

DEFAULT_WORK = "runs/leaderboard"
DEFAULT_OUT = "results/leaderboard"
STATUS = "status.json"
SETTINGS = "settings.json"
SUMMARY = "leaderboard.json"
USAGE = """examples:
  python -m experiments.leaderboard run --dry-run          # every data copy, caption step and cell, with commands
  python -m experiments.leaderboard run                    # the whole grid (hours on a 2-core CPU machine)
  python -m experiments.leaderboard run --resume --jobs 2  # after a crash or a kill; two tasks at a time
  python -m experiments.leaderboard run --only method=narvid,conical --only seed=0 --only configuration=default
  python -m experiments.leaderboard collect                # finished cells -> results/leaderboard (then the README)
"""


# ---------------------------------------------------------------- arguments
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", default=DEFAULT_WORK,
                   help=f"work folder: data copies, caption steps, run folders, registry (default {DEFAULT_WORK})")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="a SynthVTR argument for every command that reads the data (repeatable; tests: tiny sizes)")
    p.add_argument("--arg", action="append", default=[], metavar="ARG",
                   help="an argument for every training run, e.g. --arg=--trainer.max_epochs=1 (repeatable)")
    p.add_argument("--csi-arg", action="append", default=[], metavar="ARG",
                   help="an argument for ExCae's prompt search, e.g. --csi-arg=--max_rounds=2 (repeatable)")
    p.add_argument("--care-arg", action="append", default=[], metavar="ARG",
                   help="an argument for the CaRe-DPO pipeline, e.g. --care-arg=--sampling.num_samples=2 (repeatable)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.leaderboard", epilog=USAGE,
                                description=sys.modules["experiments.leaderboard"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="prepare the data copies, run the caption steps, then the cells")
    _common(run)
    run.add_argument("--resume", action="store_true",
                     help="continue a work folder: finished steps and cells are skipped, unfinished ones rerun from "
                          "scratch (processes an earlier, killed run left are killed first)")
    run.add_argument("--jobs", type=int, default=1, help="tasks at once (one GPU each when GPUs are visible)")
    run.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                     help="only these cells: configuration=..., method=..., seed=... (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="list the data copies, steps and cells with their "
                                                            "commands; run nothing")
    run.add_argument("--allow-dirty", action="store_true",
                     help="run from a checkout with uncommitted changes (its cells are registered as such; tests)")
    step = sub.add_parser("step", help="(used by run) one caption step")
    _common(step)
    step.add_argument("--configuration", required=True, choices=list(CONFIGURATION_BY_NAME))
    step.add_argument("--step", required=True, choices=list(STEP_BY_NAME))
    cell = sub.add_parser("cell", help="(used by run) one cell: run, check, register")
    _common(cell)
    cell.add_argument("--configuration", required=True, choices=list(CONFIGURATION_BY_NAME))
    cell.add_argument("--method", required=True, choices=list(METHOD_BY_NAME))
    cell.add_argument("--seed", required=True, type=int, choices=list(SEEDS))
    cell.add_argument("--allow-dirty", action="store_true")
    collect = sub.add_parser("collect", help=f"copy the finished cells and their status into {DEFAULT_OUT}")
    _common(collect)
    collect.add_argument("--out", default=DEFAULT_OUT, help=f"the committed results folder (default {DEFAULT_OUT})")
    collect.add_argument("--not-run-reason", default=None, metavar="TEXT",
                         help="why the cells that have not run did not (e.g. the compute they need): recorded for "
                              "each in leaderboard.json and printed in the table's missing-cells line")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(Path(args.work), list(args.data), list(args.arg), list(args.csi_arg), list(args.care_arg))


def _task_args(args: argparse.Namespace) -> list[str]:
    return [f"--work={Path(args.work).resolve()}", *(f"--data={d}" for d in args.data),
            *(f"--arg={a}" for a in args.arg), *(f"--csi-arg={a}" for a in args.csi_arg),
            *(f"--care-arg={a}" for a in args.care_arg)]


def _show(cmd: list[str]) -> str:
    return "python " + shlex.join(cmd[1:])


# ---------------------------------------------------------------- the checkout
def dirty_files() -> list[str]:
    """Uncommitted changes of the checkout (``git status --porcelain``: tracked edits and untracked, non-ignored
    files); a checkout git cannot read counts as dirty."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return [f"(git status failed: {err})"]
    return [line for line in out.splitlines() if line.strip()]


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------- status
def _last_error(log: Path, code: int | None) -> str:
    """The reason a task failed: its last ``error:`` line (the task's own refusal), else the return code and the
    last line of its log."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()[:400]
    return f"exit code {code}" + (f"; last log line: {lines[-1][:300]}" if lines else "")


class Status:
    """``<work>/status.json``: every task's last outcome (done, failed with its reason), rewritten atomically."""

    def __init__(self, work: Path) -> None:
        self.path = work / STATUS
        found = read_json(self.path, "the leaderboard status")
        self.data: dict[str, dict[str, Any]] = found if isinstance(found, dict) else {"steps": {}, "cells": {}}
        self.data.setdefault("steps", {})
        self.data.setdefault("cells", {})

    def set(self, kind: str, key: str, **entry: Any) -> None:
        self.data[kind][key] = {**entry, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def save(self) -> None:
        write_json(self.path, self.data)


# ---------------------------------------------------------------- run
def keep_settings(settings: Settings) -> None:
    """``<work>/settings.json``: the overrides every task of the work folder runs with, written by the first run; a
    later run with other overrides is refused (its cells would not be one grid)."""
    path = settings.work / SETTINGS
    ours = settings_record(settings)
    found = read_json(path, "the work folder's settings")
    if found is None:
        write_json(path, ours)
    elif found != ours:
        raise LeaderboardError(f"{path}: this work folder runs with the overrides {found}, not {ours}; give the same "
                               "--data / --arg / --csi-arg / --care-arg, or use another --work")


def settings_record(settings: Settings) -> dict[str, list[str]]:
    return {"data": settings.data, "args": settings.args, "csi_args": settings.csi_args,
            "care_args": settings.care_args}


def _dry_run(settings: Settings, confs: list[Configuration], steps: list[tuple[Configuration, Step]],
             selected: list[Cell], resume: bool) -> int:
    print(f"leaderboard: {len(selected)} cell(s) of {len(plan.cells())} ({len(CONFIGURATIONS)} configurations x "
          f"{len(METHODS)} methods x {len(SEEDS)} seeds); work {settings.work}")
    for conf in confs:
        dm = data_copy.data_module(settings, conf)
        print(f"[data {conf.name}] SynthVTR copy {dm.root} (fingerprint {dm.generator_config.fingerprint()}): "
              "generate once, check it against its manifest, cache the frozen video features, record its digest in "
              f"{data_copy.record_path(settings, conf)}; re-checked before every step and cell")
    for conf, step in steps:
        state = " (done: skipped with --resume)" if resume and is_finished(step_done(settings, conf, step)) else ""
        print(f"[step {conf.name}/{step.name}] {step.what} -> {step.store}{state}")
        for cmd in plan.step_commands(settings, conf, step):
            print(f"    {_show(cmd)}")
    for cell in selected:
        state = " (finished: skipped with --resume)" if resume and is_finished(cell_done(settings, cell)) else ""
        needs = f" after {', '.join(cell.method.needs)}" if cell.method.needs else ""
        print(f"[cell {cell.key}] {cell.method.display}{needs}{state}")
        print(f"    {_show(plan.cell_command(settings, cell))}")
    return 0


def _started(settings: Settings, confs: list[Configuration], selected: list[Cell]) -> list[Path]:
    """What an earlier run of this work folder left for the selected cells (a run without --resume refuses it)."""
    found = [data_copy.record_path(settings, c) for c in confs if data_copy.record_path(settings, c).exists()]
    for cell in selected:
        for path in (settings.runs_dir(cell.configuration) / cell.name, cell_done(settings, cell).parent):
            if path.exists():
                found.append(path)
    return found


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def cmd_run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise PlanError("--jobs must be at least 1")
    settings = _settings(args)
    selected = plan.cells(*plan.parse_only(args.only))
    steps = plan.needed_steps(selected)
    confs = [c for c in CONFIGURATIONS if any(cell.configuration == c for cell in selected)]
    if args.dry_run:
        return _dry_run(settings, confs, steps, selected, args.resume)
    # SIGTERM as an exception, so the scheduler's cleanup stops the running tasks (each kills its own processes)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run_grid(args, settings, selected, steps, confs)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_grid(args: argparse.Namespace, settings: Settings, selected: list[Cell],
              steps: list[tuple[Configuration, Step]], confs: list[Configuration]) -> int:
    from experiments.sweep import Job, cuda_devices, run_jobs

    with work_lock(settings.work):
        dirty = dirty_files()
        if dirty and not args.allow_dirty:
            raise LeaderboardError("the checkout has uncommitted changes (" + "; ".join(dirty[:5])
                                   + (f"; {len(dirty) - 5} more" if len(dirty) > 5 else "") + "), so its cells "
                                   "could not be registered (the registry refuses them): commit, then run again "
                                   "(--allow-dirty registers them as uncommitted work, for tests)")
        earlier = _started(settings, confs, selected)
        if earlier and not args.resume:
            raise LeaderboardError(f"{settings.work} holds an earlier run of these cells ({earlier[0]} and "
                                   f"{len(earlier) - 1} more); pass --resume to continue it, or choose another --work")
        keep_settings(settings)
        status = Status(settings.work)
        env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        for conf in confs:
            path = data_copy.record_path(settings, conf)
            if path.exists():
                record = data_copy.check(settings, conf)
                print(f"[data {conf.name}] {record['root']}: every file matches its manifest (content "
                      f"{record['content_sha256'][:12]}, as recorded)", flush=True)
            else:
                record = data_copy.prepare(settings, conf)
                print(f"[data {conf.name}] prepared {record['root']} (content {record['content_sha256'][:12]}, "
                      f"{record['files']} files): generated in {record['generate_s']} s, video features cached in "
                      f"{record['video_cache_s']} s", flush=True)

        def save() -> None:
            for job in [*step_jobs, *cell_jobs]:
                if job.result:
                    kind, key = ("steps", job.name) if job.name.split("/", 1)[1].startswith("step-") else \
                        ("cells", job.name)
                    status.set(kind, key, status=job.result["status"], reason=job.result.get("reason"),
                               seconds=job.result.get("seconds"), log=str(job.log))
            status.save()

        def judge_step(job: Job, code: int | None, seconds: float) -> dict[str, Any]:
            conf_name, step_name = job.name.split("/step-", 1)
            done = step_done(settings, CONFIGURATION_BY_NAME[conf_name], STEP_BY_NAME[step_name])
            if code == 0 and is_finished(done):
                return {"status": "ran", "seconds": round(seconds, 1)}
            return {"status": "failed", "reason": _last_error(job.log, code), "seconds": round(seconds, 1)}

        def judge_cell(job: Job, code: int | None, seconds: float) -> dict[str, Any]:
            cell = next(c for c in selected if c.key == job.name)
            done = cell_done(settings, cell)
            if code == 0 and is_finished(done):
                metrics = read_json(done.parent / "metrics.json", "the registered metrics") or {}
                return {"status": "ran", "metrics": metrics.get("metrics"), "seconds": round(seconds, 1)}
            return {"status": "failed", "reason": _last_error(job.log, code), "seconds": round(seconds, 1)}

        step_jobs: list[Job] = []
        for conf, step in steps:
            if is_finished(step_done(settings, conf, step)):
                print(f"[step {conf.name}/{step.name}] done (skipped)", flush=True)
                continue
            task = step_task(conf, step)
            cmd = [sys.executable, "-m", "experiments.leaderboard", "step", *_task_args(args),
                   f"--configuration={conf.name}", f"--step={step.name}"]
            step_jobs.append(Job(len(step_jobs), task, cmd, settings.steps_dir(conf) / f"{step.name}.log",
                                 env={TASK_ENV: new_attempt(task_id(settings.work, task))}, judge=judge_step))
        cell_jobs: list[Job] = []
        if step_jobs:
            print(f"{len(step_jobs)} caption step(s) to do, {args.jobs} at a time", flush=True)
            run_jobs(step_jobs, args.jobs, None, env, settings.work, len(step_jobs), on_finish=save)
        failed_steps = {j.name for j in step_jobs if j.result.get("status") == "failed"}
        blocked: list[Cell] = []
        for i, cell in enumerate(selected):
            if is_finished(cell_done(settings, cell)):
                print(f"[{i + 1}/{len(selected)}] skip {cell.key}: finished ({cell_done(settings, cell)})",
                      flush=True)
                status.set("cells", cell.key, status="done", reason=None)
                continue
            missing = [s for s in cell.method.needs if step_task(cell.configuration, STEP_BY_NAME[s]) in failed_steps]
            if missing:
                blocked.append(cell)
                status.set("cells", cell.key, status="failed",
                           reason=f"caption step {', '.join(missing)} failed (see {STATUS} steps)")
                continue
            cmd = [sys.executable, "-m", "experiments.leaderboard", "cell", *_task_args(args),
                   f"--configuration={cell.configuration.name}", f"--method={cell.method.name}",
                   f"--seed={cell.seed}", *(["--allow-dirty"] if args.allow_dirty else [])]
            cell_jobs.append(Job(i, cell.key, cmd, settings.runs_dir(cell.configuration) / f"{cell.name}.log",
                                 env={TASK_ENV: new_attempt(task_id(settings.work, cell.key))}, judge=judge_cell))
        status.save()
        parallel, devices = args.jobs, None
        if parallel > 1:
            found = cuda_devices(env)
            if found:
                devices, parallel = found, min(parallel, len(found))
        print(f"{len(cell_jobs)} of {len(selected)} cell(s) to do, {parallel} at a time"
              + (f" on CUDA devices {','.join(devices)}" if devices else "") + f"; work {settings.work}", flush=True)
        run_jobs(cell_jobs, parallel, devices, env, settings.work, len(selected), on_finish=save)
        save()
    failed = [j for j in [*step_jobs, *cell_jobs] if j.result.get("status") == "failed"]
    for job in failed:
        print(f"FAILED {job.name}: {job.result.get('reason')} (log {job.log})")
    for cell in blocked:
        print(f"NOT RUN {cell.key}: a caption step it reads failed")
    done = sum(is_finished(cell_done(settings, c)) for c in selected)
    print(f"{done} of {len(selected)} selected cell(s) finished; status in {status.path}; `python -m "
          "experiments.leaderboard collect` copies the finished ones into results/leaderboard")
    return 1 if failed or blocked else 0


# ---------------------------------------------------------------- tasks
def cmd_step(args: argparse.Namespace) -> int:
    settings = _settings(args)
    conf, step = CONFIGURATION_BY_NAME[args.configuration], STEP_BY_NAME[args.step]
    marker = run_step(settings, conf, step)
    print(f"step {conf.name}/{step.name} done in {marker['seconds']} s: {marker['per_video']} caption(s) per video "
          f"in {step.store}")
    return 0


def cmd_cell(args: argparse.Namespace) -> int:
    settings = _settings(args)
    conf, method = CONFIGURATION_BY_NAME[args.configuration], METHOD_BY_NAME[args.method]
    cell = Cell(conf, method, args.seed)
    costs = run_cell(settings, cell, args.allow_dirty)
    print(f"cell {cell.key} registered in {cell_done(settings, cell).parent}: wall {costs['wall_s']['total']} s "
          f"({costs['machine']['state']})")
    return 0


# ---------------------------------------------------------------- collect
def _public_data(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A data record without machine paths (the copy is named by its fingerprint and digest)."""
    if record is None:
        return None
    generator = {k: v for k, v in (record.get("generator") or {}).items() if k != "root"}
    return {**{k: v for k, v in record.items() if k not in ("root", "generator")}, "generator": generator}


def summary(settings: Settings, not_run_reason: str | None = None) -> dict[str, Any]:
    """``leaderboard.json``: the whole grid (every cell's state and, when not done, why), the methods, the data copies
    and the caption steps, for the README table. A failed cell's reason is its task's last error; a cell that has not
    run has ``not_run_reason`` (``collect --not-run-reason``), or none."""
    status = Status(settings.work).data
    cells = []
    for cell in plan.cells():
        finished = is_finished(cell_done(settings, cell))
        entry = status["cells"].get(cell.key) or {}
        state = "done" if finished else "failed" if entry.get("status") == "failed" else "not run"
        reason = None if finished else entry.get("reason") if state == "failed" else not_run_reason
        cells.append({"configuration": cell.configuration.name, "method": cell.method.name, "seed": cell.seed,
                      "cell": cell.name, "status": state, "reason": reason})
    configurations = []
    for conf in CONFIGURATIONS:
        record = read_json(data_copy.record_path(settings, conf), "the data record")
        steps = {}
        for step in plan.STEPS:
            marker = read_json(step_done(settings, conf, step), "a step record")
            if isinstance(marker, dict):
                steps[step.name] = {k: marker.get(k) for k in ("seconds", "per_video", "videos", "simulated", "what",
                                                               "store", "store_sha256")}
        configurations.append({"name": conf.name, "compose": list(conf.compose), "data": _public_data(record),
                               "steps": steps})
    return {"generated_by": "python -m experiments.leaderboard collect", "commit": git_sha(),
            "reference": REFERENCE, "seeds": list(SEEDS),
            "methods": [{"name": m.name, "display": m.display, "flagged_views": list(m.flagged_views)}
                        for m in METHODS],
            "configurations": configurations, "cells": cells,
            "settings": read_json(settings.work / SETTINGS, "the work folder's settings") or settings_record(settings)}


def cmd_collect(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out = Path(args.out)
    with work_lock(settings.work):
        record = summary(settings, args.not_run_reason)
        out.mkdir(parents=True, exist_ok=True)
        for conf in CONFIGURATIONS:
            src = settings.registry(conf)
            tmp = out / f".{conf.name}.collecting-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                copied = 0
                for cell in plan.cells([conf.name]):
                    folder = cell_done(settings, cell).parent
                    if is_finished(cell_done(settings, cell)):
                        shutil.copytree(folder, tmp / cell.name)
                        copied += 1
                for split in sorted(src.glob("test_set_*.json")) if src.is_dir() else []:
                    shutil.copy2(split, tmp / split.name)
                dest = out / conf.name
                backup = out / f".{conf.name}.replaced-{os.getpid()}"
                if dest.exists():
                    os.replace(dest, backup)
                os.replace(tmp, dest)
                shutil.rmtree(backup, ignore_errors=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            print(f"{conf.name}: {copied} finished cell(s) -> {out / conf.name}")
        write_json(out / SUMMARY, record)
    states: dict[str, int] = {}
    for cell in record["cells"]:
        states[cell["status"]] = states.get(cell["status"], 0) + 1
    print(f"wrote {out / SUMMARY}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + "; regenerate the "
          "README table with `python -m experiments.tables`")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not (ROOT / "main.py").is_file():
        # the cells run `python main.py ...` in the checkout and are registered against its git commit: an installed
        # vtr (site-packages) has neither
        print(f"error: the leaderboard runs from a git checkout of vtr (its cells run main.py there and register "
              f"against its commit); {ROOT} is not one: clone the repository and run it there "
              "(python -m experiments.leaderboard, or vtr leaderboard with that checkout installed editable)",
              file=sys.stderr, flush=True)
        return 2
    try:
        return {"run": cmd_run, "step": cmd_step, "cell": cmd_cell, "collect": cmd_collect}[args.command](args)
    except (LeaderboardError, PlanError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def cli() -> None:
    sys.exit(main())

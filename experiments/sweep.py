"""Run a W&B sweep YAML's grid locally, without a W&B server (W&B sweeps cannot run offline).

The sweep files in ``experiments/sweeps/`` are ordinary W&B sweep configs (``wandb sweep <file>`` then
``wandb agent`` runs them against a server). Their ``command`` uses ``${args}``, so every parameter is a
flat dotted LightningCLI key (``--model.init_args.nucleus_p=0.5``). This runner expands the same grid
(``values`` lists, ``value`` constants) and runs each combination as a subprocess with the same command
line, each into ``<out>/<run name>/version_N/`` with its output in ``<out>/<run name>.log``, then prints a
table of every run (return code, test metrics) with the end of each failed run's log, writes
``<out>/sweep_summary.json`` (with each run's recorded ``git_sha`` / ``git_dirty`` / ``git_diff_sha256``) and
``<out>/sweep_provenance.json`` (the launcher's, ``lightning_modules.provenance``) and exits non-zero when a run
failed. Runs start in the current directory; the shipped sweeps' ``program: main.py`` runs as ``python -m vtr`` (the
same LightningCLI, checkout or installed), and their ``configs/...`` paths are the shipped configs unless the current
directory has its own (``vtr.resources``).

    python -m experiments.sweep experiments/sweeps/narvid_table3_modules.yaml --dry-run
    python -m experiments.sweep experiments/sweeps/narvid_table3_modules.yaml --out runs/sweeps/table3
    python -m experiments.sweep experiments/sweeps/narvid_table3_modules.yaml --resume     # after a crash / kill
    python -m experiments.sweep experiments/sweeps/narvid_table3_modules.yaml --jobs 4     # 4 runs at once

``--resume`` skips every run that already has ``version_*/test/metrics.json`` and reruns the others from
scratch, deleting their unfinished ``version_*`` folders first (a killed run leaves one without
``test/metrics.json``), so a sweep killed and restarted with ``--resume`` ends with the same runs as one
never interrupted. ``--jobs N`` runs N at once; when CUDA GPUs are visible (``CUDA_VISIBLE_DEVICES``, else
``nvidia-smi -L``, else torch) each run gets one GPU of its own through ``CUDA_VISIBLE_DEVICES`` (at most one
run per GPU, so at most as many runs as GPUs). ``--jobs 1`` (the default) leaves ``CUDA_VISIBLE_DEVICES`` as it
is, so a run can use several GPUs (DDP).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from datamodules.atomic import write_json_atomic
from vtr.resources import resolve

MAX_NAME = 150           # run folder names stay well below the 255-byte file name limit
TAIL_LINES = 5           # lines of a failed run's log in the final summary
POLL_SECONDS = 0.1

# W&B sweep configuration keys (docs.wandb.ai, "Sweep configuration structure" / "options")
TOP_LEVEL_KEYS = {"program", "method", "metric", "parameters", "command", "name", "description", "project",
                  "entity", "early_terminate", "run_cap", "job", "image_uri"}
METHODS = {"grid", "random", "bayes"}
GOALS = {"minimize", "maximize"}
DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
                 "inv_log_uniform_values", "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta"}
PARAMETER_KEYS = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q", "a", "b", "probabilities",
                  "parameters"}
MACROS = {"${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_json}",
          "${args_json_file}", "${args_no_boolean_flags}"}
ENVVAR_MACRO = re.compile(r"\$\{envvar:([A-Za-z0-9_]+)\}")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


# ---------------------------------------------------------------- the sweep file
def _parameter_errors(name: str, spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return [f"parameter {name!r}: expected a mapping ({{value: ...}}, {{values: [...]}} or a distribution)"]
    unknown = sorted(set(spec) - PARAMETER_KEYS)
    if unknown:
        return [f"parameter {name!r}: unknown keys {unknown}"]
    if "parameters" in spec:
        nested = spec["parameters"]
        if not isinstance(nested, dict) or not nested:
            return [f"parameter {name!r}: nested 'parameters' must be a non-empty mapping"]
        return [e for key, sub in nested.items() for e in _parameter_errors(f"{name}.{key}", sub)]
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            return [f"parameter {name!r}: 'values' must be a non-empty list"]
        return []
    if "value" in spec:
        return []
    distribution = spec.get("distribution")
    if distribution is not None and distribution not in DISTRIBUTIONS:
        return [f"parameter {name!r}: unknown distribution {distribution!r}"]
    if distribution in (None, "uniform", "int_uniform", "q_uniform", "log_uniform", "log_uniform_values",
                        "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values") \
            and not ("min" in spec and "max" in spec):
        return [f"parameter {name!r}: needs 'value', 'values' or a distribution with 'min' and 'max'"]
    return []


def validate_sweep(sweep: Any) -> list[str]:
    """Problems of a W&B sweep config against the documented keys (empty when valid).

    The installed wandb (0.31) validates sweep configs on the server, or locally only through the optional
    ``sweeps`` package (``wandb[sweeps]``, not a dependency of vtr), so this checks the documented structure:
    ``method`` grid/random/bayes; ``metric`` {name, goal minimize/maximize}; every parameter {value},
    {values: [...]}, a distribution with its bounds, or nested ``parameters``; ``command`` entries are W&B's
    macros, ``${envvar:NAME}`` or literal strings; ``program`` is required when ``${program}`` is used.
    """
    if not isinstance(sweep, dict):
        return ["the sweep file must hold a mapping"]
    errors = [f"unknown top-level key {k!r}" for k in sorted(set(sweep) - TOP_LEVEL_KEYS)]
    if sweep.get("method") not in METHODS:
        errors.append(f"method must be one of {sorted(METHODS)} (got {sweep.get('method')!r})")
    metric = sweep.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str) or not metric["name"]:
            errors.append("metric must be a mapping with a 'name'")
        elif metric.get("goal", "minimize") not in GOALS:
            errors.append(f"metric.goal must be one of {sorted(GOALS)} (got {metric.get('goal')!r})")
    elif sweep.get("method") == "bayes":
        errors.append("method bayes needs a metric")
    parameters = sweep.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        errors.append("parameters must be a non-empty mapping")
    else:
        for name, spec in parameters.items():
            errors += _parameter_errors(str(name), spec)
    command = sweep.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(t, str) for t in command):
        errors.append("command must be a list of strings")
    else:
        for token in command:
            if token.startswith("${") and token not in MACROS and not ENVVAR_MACRO.fullmatch(token):
                errors.append(f"command: unknown macro {token!r} (W&B knows {sorted(MACROS)} and ${{envvar:NAME}})")
        if "${program}" in command and not sweep.get("program"):
            errors.append("command uses ${program} but the file has no 'program'")
    return errors


def expand_grid(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product of the ``parameters`` block (``values`` lists and ``value`` constants)."""
    if sweep.get("method", "grid") != "grid":
        raise ValueError(f"local runner supports method: grid only (got {sweep.get('method')!r}); "
                         "run random/bayes sweeps with `wandb agent`")
    names, choices = [], []
    for name, spec in sweep.get("parameters", {}).items():
        if "values" in spec:
            names.append(name)
            choices.append(list(spec["values"]))
        elif "value" in spec:
            names.append(name)
            choices.append([spec["value"]])
        else:
            raise ValueError(f"parameter {name!r}: the local runner needs 'values' or 'value', got {sorted(spec)}")
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def program_command(program: str) -> list[str]:
    """What ``${program}`` runs. The shipped sweeps' ``main.py`` is the suite's LightningCLI: ``-m vtr``, the same
    CLI in a checkout and in an installed vtr, from any directory. Any other program is a file, relative to the
    working directory (where W&B's agent runs it too)."""
    return ["-m", "vtr"] if program == "main.py" else [program]


def command_for(sweep: dict[str, Any], params: dict[str, Any], extra: list[str]) -> list[str]:
    """The sweep's ``command`` with W&B's macros expanded; ``extra`` arguments follow the parameters."""
    args = [f"--{k}={format_value(v)}" for k, v in params.items()]
    command = sweep.get("command", DEFAULT_COMMAND)
    if not any(t in command for t in ("${args}", "${args_no_boolean_flags}")):
        raise ValueError("the local runner needs ${args} (or ${args_no_boolean_flags}) in the command: it passes "
                         "the run's logger (its output folder) that way")
    out: list[str] = []
    for token in command:
        envvar = ENVVAR_MACRO.fullmatch(token)
        if token == "${env}":
            continue
        if token == "${interpreter}":
            out.append(sys.executable)
        elif token == "${program}":
            out.extend(program_command(sweep["program"]))
        elif token == "${args}":
            out.extend(args + extra)
        elif token == "${args_no_boolean_flags}":
            out.extend([f"--{k}" for k, v in params.items() if v is True]
                       + [f"--{k}={format_value(v)}" for k, v in params.items() if not isinstance(v, bool)]
                       + extra)
        elif token == "${args_no_hyphens}":
            out.extend(f"{k}={format_value(v)}" for k, v in params.items())
        elif token == "${args_json}":
            out.append(json.dumps(params))
        elif envvar:
            out.append(os.environ.get(envvar.group(1), ""))
        elif token.startswith("${"):
            raise ValueError(f"command macro {token} is not supported by the local runner; use `wandb agent`")
        else:
            out.append(token)
    return out


def run_name(params: dict[str, Any]) -> str:
    """``key=value`` of every parameter (last part of the dotted key); longer than MAX_NAME characters, the name
    is cut and ends with a hash of all the parameters, so two rows never share a name by truncation."""
    parts = [f"{k.split('.')[-1]}={format_value(v)}" for k, v in params.items()]
    name = ",".join(parts).replace("/", "_") or "default"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - len(digest) - 1]}~{digest}"
    return name


def select_rows(grid: list[dict[str, Any]], only: list[str]) -> list[int]:
    """Indices of the grid rows that match every ``KEY=VALUE`` of ``only``.

    ``KEY`` is a parameter of the sweep file, by its full name or its last dotted part (``seed_everything``,
    ``hn_weight``); ``VALUE`` is read as YAML (``0`` is the number 0, ``none`` the string) and compared with the
    grid's value. A key that is no parameter, or a filter that keeps no row, is a ValueError naming it.
    """
    keep = list(range(len(grid)))
    params = list(grid[0]) if grid else []
    for item in only:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--only {item!r}: expected KEY=VALUE, e.g. --only seed_everything=0")
        matches = [p for p in params if p == key or p.rsplit(".", 1)[-1] == key]
        if len(matches) != 1:
            raise ValueError(f"--only {item!r}: {key!r} names {len(matches)} parameters of the sweep; its "
                             f"parameters are {params}")
        value = yaml.safe_load(raw)
        keep = [i for i in keep if grid[i][matches[0]] == value or format_value(grid[i][matches[0]]) == raw]
    if not keep:
        raise ValueError(f"--only {' '.join(only)}: no grid row matches")
    return keep


def run_names(grid: list[dict[str, Any]]) -> list[str]:
    """One unique folder name per grid row; ValueError naming the rows when two still share one."""
    names = [run_name(p) for p in grid]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"grid rows {seen[name] + 1} and {i + 1} map to the same run name {name!r} "
                             f"({grid[seen[name]]} vs {grid[i]}): a repeated value, or values that differ only "
                             "by '/' vs '_' or in a parameter with the same last key part. Make them distinct.")
        seen[name] = i
    return names


# ---------------------------------------------------------------- run folders
def _version(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def finished_metrics(run_dir: Path) -> Path | None:
    """``test/metrics.json`` of the newest version that has one."""
    found = sorted(run_dir.glob("version_*/test/metrics.json"), key=lambda p: _version(p.parent.parent))
    return found[-1] if found else None


def remove_partial(run_dir: Path) -> list[Path]:
    """Delete the ``version_*`` folders without ``test/metrics.json`` (what a killed run leaves behind)."""
    removed = []
    for version in sorted(run_dir.glob("version_*"), key=_version):
        if version.is_dir() and not (version / "test" / "metrics.json").is_file():
            shutil.rmtree(version)
            removed.append(version)
    return removed


def sweep_metric_value(version_dir: Path, metric: str, goal: str) -> float | None:
    """Best value of a logged metric (e.g. ``val/t2v_R1``) over the run's ``metrics.csv`` rows."""
    path = version_dir / "metrics.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        values = []
        for row in csv.DictReader(fh):
            try:
                values.append(float(row.get(metric) or "nan"))
            except ValueError:
                continue
    values = [v for v in values if v == v]  # drop NaN (rows where the metric was not logged)
    if not values:
        return None
    return max(values) if goal == "maximize" else min(values)


# ---------------------------------------------------------------- devices
def cuda_devices(env: dict[str, str]) -> list[str]:
    """The GPUs a run may be given: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``, else torch."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = []
        for token in (t.strip() for t in visible.split(",")):
            if not token or token.startswith("-"):  # CUDA ignores everything from an invalid index on
                break
            devices.append(token)
        return devices
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        if listed is not None and listed.returncode == 0:
            gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
            return [str(i) for i in range(len(gpus))]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


# ---------------------------------------------------------------- running
@dataclass
class Job:
    index: int
    name: str
    cmd: list[str]
    log: Path
    device: str | None = None
    proc: subprocess.Popen | None = None
    handle: IO[str] | None = None
    started: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)   # environment variables of this job only
    # the result of a finished job from (job, return code, seconds): a dict with ``status`` ("failed" or another) and
    # optionally ``reason`` and ``metrics``; None: a sweep run's record (``_record``: test/metrics.json under out/name)
    judge: Callable[[Job, int | None, float], dict[str, Any]] | None = None


def _record(out: Path, name: str, returncode: int | None, seconds: float | None, log: Path, status: str,
            ) -> dict[str, Any]:
    """A ``sweep_summary.json`` entry; ``status`` is ``ran`` or ``skipped``, ``failed`` when no metrics were written
    or the return code is not 0."""
    metrics_path = finished_metrics(out / name)
    metrics, code = None, {}
    if metrics_path is not None and returncode == 0:
        record = json.loads(metrics_path.read_text())
        metrics = record.get("metrics")
        # the code the run itself recorded (runs of one sweep can differ when a file was edited while it ran)
        code = {k: record.get(k) for k in ("git_sha", "git_dirty", "git_diff_sha256")}
    return {"run": name, "returncode": returncode, "status": status if metrics is not None else "failed",
            "metrics": metrics, "run_dir": str(metrics_path.parent.parent) if metrics_path else None,
            "log": str(log), "seconds": None if seconds is None else round(seconds, 1), **code}


def previous_summary(out: Path) -> dict[str, dict[str, Any]]:
    """Entries of an earlier ``sweep_summary.json`` by run name ({} when there is none or it is unreadable)."""
    try:
        data = json.loads((out / "sweep_summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return {r["run"]: r for r in data if isinstance(r, dict) and "run" in r} if isinstance(data, list) else {}


def _start(job: Job, env: dict[str, str], total: int) -> None:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    job.handle = job.log.open("w")
    job.handle.write(f"$ {shlex.join(job.cmd)}\n")
    job.handle.flush()
    run_env = {**env, **job.env}
    if job.device is not None:
        run_env["CUDA_VISIBLE_DEVICES"] = job.device
    job.started = time.monotonic()
    # in the runner's working directory: the runs' relative paths (configs, data roots) are the user's
    job.proc = subprocess.Popen(job.cmd, env=run_env, stdout=job.handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    where = f" on CUDA device {job.device}" if job.device is not None else ""
    print(f"[{job.index + 1}/{total}] start {job.name}{where} (log {job.log})", flush=True)


def _finish(job: Job, out: Path, total: int) -> None:
    assert job.proc is not None and job.handle is not None
    job.handle.close()
    seconds = time.monotonic() - job.started
    if job.judge is not None:
        job.result = job.judge(job, job.proc.returncode, seconds)
    else:
        job.result = _record(out, job.name, job.proc.returncode, seconds, job.log, "ran")
    if job.result["status"] == "failed":
        why = job.result.get("reason") or (
            "no test/metrics.json" if job.proc.returncode == 0 else f"rc={job.proc.returncode}")
        print(f"[{job.index + 1}/{total}] FAILED {job.name} ({why}) after {seconds:.1f} s, see {job.log}",
              flush=True)
    else:
        r1 = (job.result.get("metrics") or {}).get("t2v_R1")
        print(f"[{job.index + 1}/{total}] done {job.name} in {seconds:.1f} s"
              + (f" (test t2v_R1 {r1})" if job.judge is None or r1 is not None else ""), flush=True)


def run_jobs(jobs: list[Job], parallel: int, devices: list[str] | None, env: dict[str, str], out: Path,
             total: int, on_finish: Any = None) -> None:
    """Run the jobs, at most ``parallel`` at once; with ``devices``, one free device per running job
    (round-robin), never two jobs on one device."""
    pending, running = deque(jobs), []
    cursor = 0
    try:
        while pending or running:
            while pending and len(running) < parallel:
                if devices is not None:
                    busy = {j.device for j in running}
                    order = devices[cursor:] + devices[:cursor]
                    free = [d for d in order if d not in busy]
                    if not free:
                        break
                    pending[0].device = free[0]
                    cursor = (devices.index(free[0]) + 1) % len(devices)
                job = pending.popleft()
                _start(job, env, total)
                running.append(job)
            time.sleep(POLL_SECONDS)
            for job in list(running):
                if job.proc is not None and job.proc.poll() is not None:
                    running.remove(job)
                    _finish(job, out, total)
                    if on_finish is not None:
                        on_finish()
    except BaseException:
        for job in running:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.terminate()
        for job in running:
            if job.proc is not None:
                try:
                    job.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    job.proc.kill()
            if job.handle is not None:
                job.handle.close()
        raise


def _tail(path: str | None, lines: int = TAIL_LINES) -> list[str]:
    if not path or not Path(path).is_file():
        return ["(no log)"]
    with open(path, errors="replace") as fh:
        return [line.rstrip("\n") for line in deque(fh, maxlen=lines)] or ["(empty log)"]


def _fmt(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


def summary_table(records: list[dict[str, Any]], out: Path, metric: str, goal: str) -> list[str]:
    """Markdown table of every run: return code, test metrics from ``test/metrics.json`` and, when the sweep's
    metric is not a test metric, its best value over epochs read from the run's ``metrics.csv``."""
    test_metric = metric.split("/", 1)[1] if metric.startswith("test/") else None
    columns = ["t2v_R1", "t2v_R5", "v2t_R1", "rsum"]
    extra_test = test_metric if test_metric and test_metric not in columns else None
    header = ["run", "rc", "status", *(f"test {c}" for c in columns)]
    if extra_test:
        header.append(f"test {extra_test}")
    if test_metric is None:
        header.append(f"{metric} ({'max' if goal == 'maximize' else 'min'} over epochs, metrics.csv)")
    header.append("seconds")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        m = r["metrics"] or {}
        row = [r["run"], str(r["returncode"]), r["status"], *(_fmt(m.get(c)) for c in columns)]
        if extra_test:
            row.append(_fmt(m.get(extra_test), 2))
        if test_metric is None:
            best = sweep_metric_value(Path(r["run_dir"]), metric, goal) if r["run_dir"] and r["metrics"] else None
            row.append(_fmt(best, 2))
        row.append(_fmt(r["seconds"], 1))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_summary(out: Path, records: list[dict[str, Any]]) -> None:
    write_json_atomic(out / "sweep_summary.json", records)



def main(argv: list[str] | None = None) -> int:
    """Run the sweep; returns the exit code (1 when a run failed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", default=None, help="runs directory (default runs/sweeps/<sweep name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the command lines only")
    parser.add_argument("--resume", action="store_true",
                        help="skip runs that have test/metrics.json; rerun the others, deleting their unfinished "
                             "version_* folders")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one GPU each when GPUs are visible)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="run only the grid rows with this parameter value (repeatable; e.g. seed_everything=0); "
                             "run folder names stay those of the full grid, so the rest can follow with --resume")
    args, extra = parser.parse_known_args(argv)  # unknown arguments go to every run, e.g. --trainer.max_epochs=2
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.sweep = Path(resolve(str(args.sweep)))  # experiments/sweeps/<name>.yaml: the shipped one, from anywhere
    sweep = yaml.safe_load(args.sweep.read_text())
    problems = validate_sweep(sweep)
    if problems:
        parser.error(f"{args.sweep}: not a valid W&B sweep config:\n  " + "\n  ".join(problems))
    grid = expand_grid(sweep)
    try:
        names = run_names(grid)
    except ValueError as err:
        parser.error(f"{args.sweep}: {err}")
    try:
        selected = set(select_rows(grid, args.only))
    except ValueError as err:
        parser.error(f"{args.sweep}: {err}")
    extra = [a for a in extra if a != "--"]
    out = Path(args.out or Path("runs") / "sweeps" / (sweep.get("name") or args.sweep.stem)).resolve()
    metric = sweep.get("metric", {}).get("name", "test/t2v_R1")
    goal = sweep.get("metric", {}).get("goal", "maximize")
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    total = len(grid)
    if args.only:
        print(f"--only {' '.join(args.only)}: {len(selected)} of {total} grid rows", flush=True)

    records: list[dict[str, Any] | None] = [None] * total
    earlier = previous_summary(out) if args.resume else {}
    jobs: list[Job] = []
    for i, (params, name) in enumerate(zip(grid, names, strict=True)):
        if i not in selected:
            continue
        logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                              "init_args": {"save_dir": str(out), "name": name}}])
        cmd = command_for(sweep, params, [*extra, f"--trainer.logger={logger}"])
        done = finished_metrics(out / name) if args.resume else None
        if args.dry_run:
            state = f" (skipped with --resume: {done} exists)" if done else ""
            print(f"[{i + 1}/{total}] {shlex.join(cmd)}{state}", flush=True)
            continue
        if done is not None:
            print(f"[{i + 1}/{total}] skip {name}: {done} exists (--resume)", flush=True)
            records[i] = _record(out, name, 0, earlier.get(name, {}).get("seconds"), out / f"{name}.log", "skipped")
            continue
        if args.resume and (out / name).is_dir():
            removed = remove_partial(out / name)
            if removed:
                print(f"[{i + 1}/{total}] rerun {name}: deleted unfinished "
                      + ", ".join(p.name for p in removed) + " (no test/metrics.json)", flush=True)
        jobs.append(Job(i, name, cmd, out / f"{name}.log"))
    if args.dry_run:
        return 0

    parallel = args.jobs
    devices = None
    if parallel > 1:
        found = cuda_devices(env)
        if found:
            devices = found
            if parallel > len(found):
                print(f"--jobs {parallel} but {len(found)} GPU(s): at most {len(found)} runs at once, one per GPU",
                      flush=True)
            parallel = min(parallel, len(found))
    from lightning_modules.provenance import run_provenance

    # the launcher's code and machine, as every run's metrics.json records its own (docs/reference/artifacts.md)
    write_json_atomic(out / "sweep_provenance.json", {"sweep": str(args.sweep), **run_provenance()})
    print(f"{len(jobs)} of {total} runs to do, {parallel} at a time"
          + (f" on CUDA devices {','.join(devices)}" if devices else "") + f"; output in {out}", flush=True)

    def save() -> None:
        for job in jobs:
            if job.result:
                records[job.index] = job.result
        write_summary(out, [r for r in records if r is not None])

    run_jobs(jobs, parallel, devices, env, out, total, on_finish=save)
    save()

    final = [r for r in records if r is not None]
    failed = [r for r in final if r["status"] == "failed"]
    print()
    print("\n".join(summary_table(final, out, metric, goal)))
    if not metric.startswith("test/"):
        print(f"\nThe sweep's metric {metric} ({goal}) is read from each run's metrics.csv; the other metric columns "
              "are test-split values from test/metrics.json.")
    for r in failed:
        why = "exited 0 without test/metrics.json" if r["returncode"] == 0 else f"return code {r['returncode']}"
        print(f"\n--- {r['run']} failed ({why}); last lines of {r['log']}:")
        print("\n".join("    " + line for line in _tail(r["log"])))
    print(f"\n{len(final) - len(failed)} of {total} runs finished, {len(failed)} failed; "
          f"summary in {out / 'sweep_summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

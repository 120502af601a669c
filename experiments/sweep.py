"""Run a W&B sweep YAML's grid locally, without a W&B server (W&B sweeps cannot run offline).

The sweep files in ``experiments/sweeps/`` are ordinary W&B sweep configs (``wandb sweep <file>`` then
``wandb agent`` runs them against a server). Their ``command`` uses ``${args}``, so every parameter is a
flat dotted LightningCLI key (``--model.init_args.nucleus_p=0.5``). This runner expands the same grid
(``values`` lists, ``value`` constants) and runs each combination as a subprocess with the same command
line, then prints a table of the resulting ``test/metrics.json`` files.

    python -m experiments.sweep experiments/sweeps/narvid_table3_modules.yaml --dry-run
    python -m experiments.sweep experiments/sweeps/narvid_table3_modules.yaml --out runs/sweeps/table3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


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


def command_for(sweep: dict[str, Any], params: dict[str, Any], extra: list[str]) -> list[str]:
    """The sweep's ``command`` with W&B's macros expanded (``${interpreter}``, ``${program}``, ``${args}``)."""
    args = [f"--{k}={format_value(v)}" for k, v in params.items()]
    out: list[str] = []
    for token in sweep.get("command", ["${env}", "${interpreter}", "${program}", "${args}"]):
        if token == "${env}":
            continue
        if token == "${interpreter}":
            out.append(sys.executable)
        elif token == "${program}":
            out.append(str(ROOT / sweep["program"]))
        elif token == "${args}":
            out.extend(args + extra)
        else:
            out.append(token)
    return out


def run_name(params: dict[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={format_value(v)}" for k, v in params.items()]
    return ",".join(parts).replace("/", "_")[:150] or "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", default=None, help="runs directory (default runs/sweeps/<sweep name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the command lines only")
    args, extra = parser.parse_known_args()  # unknown arguments go to every run, e.g. --trainer.max_epochs=2
    sweep = yaml.safe_load(args.sweep.read_text())
    grid = expand_grid(sweep)
    extra = [a for a in extra if a != "--"]
    out = Path(args.out or ROOT / "runs" / "sweeps" / (sweep.get("name") or args.sweep.stem))
    rows = []
    for i, params in enumerate(grid):
        name = run_name(params)
        logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                              "init_args": {"save_dir": str(out), "name": name}}])
        cmd = command_for(sweep, params, [*extra, f"--trainer.logger={logger}"])
        print(f"[{i + 1}/{len(grid)}] {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        result = subprocess.run(cmd, cwd=ROOT, env=env)
        metrics = sorted((out / name).glob("version_*/test/metrics.json"))
        record = json.loads(metrics[-1].read_text()) if metrics and result.returncode == 0 else None
        rows.append((name, result.returncode, record))
    if args.dry_run:
        return
    metric = sweep.get("metric", {}).get("name", "test/t2v_R1").split("/")[-1]
    print(f"\n| run | rc | t2v_R1 | t2v_R5 | v2t_R1 | rsum | {metric} |\n|---|---|---|---|---|---|---|")
    for name, rc, record in rows:
        if record is None:
            print(f"| {name} | {rc} | failed | | | | |")
            continue
        m = record["metrics"]
        print(f"| {name} | {rc} | {m['t2v_R1']:.1f} | {m['t2v_R5']:.1f} | {m['v2t_R1']:.1f} | {m['rsum']:.1f} | "
              f"{m.get(metric, float('nan')):.2f} |")
    (out / "sweep_summary.json").write_text(json.dumps(
        [{"run": n, "returncode": rc, "metrics": r["metrics"] if r else None} for n, rc, r in rows], indent=2))


if __name__ == "__main__":
    main()

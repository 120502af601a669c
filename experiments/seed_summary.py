"""Mean ± sample std over seeds of test metrics, from run directories' ``test/metrics.json`` or registered runs'
``metrics.json`` (``results/<study>/<name>/``).

    python -m experiments.seed_summary results/clip_init_synthvtr --group '(.*)_s\\d+$'

Every run below the given folders is one run; runs are grouped by the first capture group of ``--group`` applied
to the run's folder name (the folder holding ``test/`` or the registered run's folder, or the ``version_N``
folder's parent). Prints a markdown table with the number of seeds and the seeds themselves, so a reader can
check what was averaged. ``results/clip_init_synthvtr/summary.md`` is this command's output (a test keeps it so).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from experiments.results.runs import is_run_record

METRICS = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "v2t_R1", "rsum")


def run_name(metrics_file: Path) -> str:
    """``<name>/version_N/test/metrics.json`` -> ``name``; ``<name>/test/metrics.json`` -> ``name``; a registered
    run's ``<name>/metrics.json`` -> ``name``."""
    run = metrics_file.parent.parent if metrics_file.parent.name == "test" else metrics_file.parent
    return run.parent.name if re.fullmatch(r"version_\d+", run.name) else run.name


def collect(folders: list[Path], group: str) -> dict[str, list[dict[str, Any]]]:
    pattern = re.compile(group)
    groups: dict[str, list[dict[str, Any]]] = {}
    for folder in folders:
        files = sorted(p for p in folder.rglob("metrics.json") if is_run_record(p))
        if not files:
            raise FileNotFoundError(f"{folder}: no test/metrics.json (or registered run's metrics.json) below it")
        for path in files:
            name = run_name(path)
            match = pattern.search(name)
            if match is None:
                raise ValueError(f"{path}: run name {name!r} does not match --group {group!r}")
            try:
                record = json.loads(path.read_text())
            except ValueError as err:
                raise ValueError(f"{path}: not valid JSON ({err}); restore it from git or re-register the run") from err
            groups.setdefault(match.group(1) if match.groups() else name, []).append(record)
    return groups


def table(groups: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| group | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, records in sorted(groups.items()):
        cells = []
        for key in METRICS:
            values = [float(r["metrics"][key]) for r in records]  # the runs' own numbers, nothing recomputed
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.2f}{spread}")
        seeds = ",".join(str(r.get("seed")) for r in records)
        lines.append(f"| {name} | {len(records)} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--group", default=r"(.*)_s\d+$", help="regex; its first group names the run's group")
    args = parser.parse_args(argv)
    text = table(collect(args.folders, args.group))
    print(text)
    return text


def cli() -> int:
    """``main`` with bad input (no runs, a name the regex misses, broken JSON) as one ``error:`` line, exit 2."""
    try:
        main()
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())

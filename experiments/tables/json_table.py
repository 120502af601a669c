"""README tables generated from a committed JSON file with a ``rows`` list: benchmark figures
(``results/benchmarks/``), CSI's candidate pool (``results/csi_*/candidates.json``).

    <!-- json-table: results/benchmarks/train_step.json
         | columns: method, trainable_params_m = trainable params (M), ms_median = ms / step -->
    <!-- /json-table -->

``columns`` are keys of the JSON's ``rows`` entries, each optionally ``key = header``. Under the table a line gives
the file's settings (every top-level key other than ``rows``), so a figure always travels with how it was
measured. ``python -m experiments.tables`` regenerates and ``--check`` checks these blocks with the others.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from experiments.results.runs import ReportError
from experiments.tables.blocks import COMMAND, Stale, block_start, render_blocks, wrap

START = block_start("json-table")


def _fields(body: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    parts = [p.strip() for p in re.split(r"\s\|\s", " ".join(body.split()))]
    path, columns = parts[0], []
    for part in parts[1:]:
        name, _, value = part.partition(":")
        if name.strip() != "columns":
            raise ReportError(f"{where}: unknown field {part!r}; a json-table takes `columns:` only")
        for entry in value.split(","):
            key, _, header = entry.partition("=")
            columns.append((key.strip(), header.strip() or key.strip()))
    if not path or not columns:
        raise ReportError(f"{where}: write `json-table: <results json> | columns: key = header, ...`")
    return path, columns


def _fmt(value: Any) -> str:
    if isinstance(value, float):  # 4 significant digits (a score 0.9752, a time 839.3 ms), whole numbers above 10^4
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def generate(body: str, base: Path, where: str) -> str:
    path, columns = _fields(body, where)
    try:
        data = json.loads((base / path).read_text())
    except (OSError, ValueError) as err:
        raise ReportError(f"{where}: cannot read {path} ({err}); run the benchmark with --json {path}") from err
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ReportError(f"{where}: {path} has no `rows` list")
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for i, row in enumerate(rows):
        missing = [k for k, _ in columns if k not in row]
        if missing:
            raise ReportError(f"{where}: {path} row {i} has no {missing}; its keys are {sorted(row)}")
        lines.append("| " + " | ".join(_fmt(row[k]).replace("|", "\\|") for k, _ in columns) + " |")
    settings = "; ".join(f"{k} {_fmt(v)}" for k, v in data.items() if k != "rows")
    lines += ["", *wrap(f"Generated from `{path}` by `{COMMAND}`: {settings}.")]
    return "\n".join(lines)


def render(text: str, name: str, base: Path) -> tuple[str, list[Stale]]:
    """``text`` with every json-table block regenerated, and (where, old, new) for each stale block."""
    return render_blocks(text, name, base, "json-table", generate)

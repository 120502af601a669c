"""The README's leaderboard: every method on SynthVTR with its costs, generated from ``results/leaderboard``.

    <!-- leaderboard-table: results/leaderboard -->
    <!-- /leaderboard-table -->

The folder is what ``python -m experiments.leaderboard collect`` writes: ``leaderboard.json`` (the grid: methods,
seeds, configurations with their data copies and caption steps, every cell's state and, when it is not done, why)
and ``<configuration>/<method>_s<seed>/`` registered runs, each with the ``costs.json`` the leaderboard measured.

One row per method and configuration that has a registered cell:

- T2V R@1/5/10, MdR, V2T R@1 and rsum: mean ± sample std over the seeds present;
- ΔR@1 against the reference method (``leaderboard.json`` ``reference``: CLIP4Clip seqTransf) on the same
  configuration: the report's paired comparison (t2v R@1 per query, seeds matched, pooled over them; 95 % percentile
  bootstrap over queries, 10,000 resamples, seed 0 - what ``python -m experiments.report`` prints);
- "holds on both": the report's robustness verdict over the configurations (Δ of one sign with an interval that
  excludes 0 on each); a method missing on a configuration says so;
- leakage: the computed verdict of every run (``metrics.json`` ``leakage``, ``datamodules.lineage.verdict_text``);
- costs, from each cell's ``costs.json`` (``experiments/leaderboard/costs.py``): trainable parameters (the retriever;
  CaRe-DPO's DG-DPO row adds its captioner's), the median training step, the evaluation time per query against
  1,000 videos, captions per video with their generation time ("simulated" where the simulated captioner wrote
  them), the wall time (cell + captions; median over seeds) and the machine's load meanwhile;
- a method's flagged views (the conical method's paired view: each query fused with its own video's supplement,
  chosen through the ground truth) only in the last column, marked ⚑, never as its result.

Under the table: what the numbers came from (commit, data copies, settings) and every missing cell with its reason.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.results.robustness import Configuration, verdict
from experiments.results.runs import Group, ReportError, Run, discover
from experiments.results.sections import provenance
from experiments.results.stats import Comparison, compare, fmt_mean_std
from experiments.tables.blocks import COMMAND, Stale, block_start, render_blocks, wrap

START = block_start("leaderboard-table")
SUMMARY = "leaderboard.json"
COSTS = "costs.json"
RESAMPLES, SEED = 10_000, 0
CELL_NAME = re.compile(r"^(?P<method>.+)_s(?P<seed>\d+)$")
METRICS = (("t2v_R1", "T2V R@1"), ("t2v_R5", "T2V R@5"), ("t2v_R10", "T2V R@10"), ("t2v_MdR", "T2V MdR"),
           ("v2t_R1", "V2T R@1"), ("rsum", "rsum"))
FLAG = "⚑"


# ---------------------------------------------------------------- reading
def _json(path: Path, what: str, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ReportError(f"{where}: {path} is missing; `python -m experiments.leaderboard collect` writes "
                          f"{what}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{where}: {path}: cannot read {what} ({err}); collect the leaderboard again") from err


def _summary(folder: Path, where: str) -> dict[str, Any]:
    data = _json(folder / SUMMARY, "the leaderboard's summary", where)
    ok = (isinstance(data, dict) and isinstance(data.get("methods"), list) and isinstance(data.get("cells"), list)
          and isinstance(data.get("configurations"), list) and isinstance(data.get("reference"), str))
    if not ok:
        raise ReportError(f"{where}: {folder / SUMMARY} lacks methods, cells, configurations or reference; collect "
                          "the leaderboard again")
    return data


def _runs(folder: Path, conf: str, methods: set[str], where: str) -> dict[str, list[Run]]:
    """The registered runs of one configuration by method (each sorted by seed)."""
    path = folder / conf
    if not path.is_dir():
        return {}
    try:
        runs, _ = discover([str(path)]) if any(path.glob("*/metrics.json")) else ([], [])
    except ReportError as err:
        raise ReportError(f"{where}: {err}") from err
    out: dict[str, list[Run]] = {}
    for run in runs:
        m = CELL_NAME.match(run.name)
        if m is None or m.group("method") not in methods:
            raise ReportError(f"{where}: {run.path} is no cell of the leaderboard (cells are <method>_s<seed> with a "
                              f"method of {SUMMARY}); remove it or collect again")
        out.setdefault(m.group("method"), []).append(run)
    return {k: sorted(v, key=lambda r: (r.seed is None, r.seed or 0)) for k, v in out.items()}


def _costs(run: Run, where: str) -> dict[str, Any]:
    data = _json(run.path / COSTS, "each cell's costs.json", where)
    if not isinstance(data, dict):
        raise ReportError(f"{where}: {run.path / COSTS} is not an object; run the cell again")
    return data


# ---------------------------------------------------------------- cells
def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _params(n: float | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _distinct(runs: list[Run], fn: Callable[[Run], str]) -> str:
    return " / ".join(dict.fromkeys(fn(r) for r in runs))


def _leakage(run: Run) -> str:
    return provenance(Group((), [run]), "leakage")


def _cost_cells(costs: list[dict[str, Any]]) -> list[str]:
    """Trainable parameters, step, evaluation per query, captions, wall time, machine state of a row's cells."""
    def values(fn: Callable[[dict[str, Any]], Any]) -> list[float]:
        return [v for v in (_number(fn(c)) for c in costs) if v is not None]

    params = _median(values(lambda c: c.get("trainable_params")))
    captioner = _median(values(lambda c: c.get("captioner_trainable_params")))
    param_cell = _params(params) + (f" + captioner {_params(captioner)}" if captioner is not None else "")
    step = _median(values(lambda c: c.get("train_step_ms")))
    per_query = _median(values(lambda c: (c.get("eval") or {}).get("ms_per_query")))
    per_video = _median(values(lambda c: (c.get("captions") or {}).get("per_video")))
    generation = _median(values(lambda c: (c.get("captions") or {}).get("generation_s")))
    simulated = {(c.get("captions") or {}).get("simulated") for c in costs}
    if not per_video:
        caption_cell = "none"
    else:
        kind = "simulated" if simulated == {True} else "generated" if simulated == {False} else "mixed"
        caption_cell = f"{per_video:g} ({kind}, {_duration(generation)})"
    total = _median(values(lambda c: (c.get("wall_s") or {}).get("total")))
    cell = _median(values(lambda c: (c.get("wall_s") or {}).get("cell")))
    wall = _duration(total) + (f" ({_duration(cell)} + captions)" if generation else "")
    loads = values(lambda c: (c.get("machine") or {}).get("load1_mean"))
    cpus = values(lambda c: (c.get("machine") or {}).get("cpus"))
    states = {(c.get("machine") or {}).get("state") for c in costs}
    state = "shared" if "shared" in states else "not oversubscribed" if states == {"not oversubscribed"} else "unknown"
    machine = state + (f", load {min(loads):.1f}–{max(loads):.1f} on {max(cpus):.0f} CPUs" if loads and cpus else "")
    return [param_cell, f"{step:.1f}" if step is not None else "—",
            f"{per_query:.3g}" if per_query is not None else "—", caption_cell, wall, machine]


def _group(label: str, runs: list[Run]) -> Group:
    return Group((label,), runs, method=label)


def _delta_cell(cmp: Comparison | None) -> str:
    if cmp is None:
        return "—"
    return f"{cmp.pooled.text()} ({len(cmp.seeds)} seed pair{'s' if len(cmp.seeds) != 1 else ''})"


def _verdict(method: str, reference: str, by_conf: dict[str, Comparison | None], confs: list[str],
             reference_name: str) -> str:
    if method == reference:
        return "reference"
    missing = [c for c in confs if by_conf.get(c) is None]
    if missing:
        return "not decided: no comparison on " + ", ".join(missing)
    return verdict("the method", reference_name,
                   [(Configuration(c, ident=c), cmp) for c, cmp in by_conf.items() if cmp is not None])


def _missing_line(summary: dict[str, Any], present: set[tuple[str, str]]) -> str:
    """Every cell of the grid without a registered run, grouped by reason, then by configuration and method."""
    grid: dict[tuple[str, str], list[int]] = {}
    by_reason: dict[tuple[str, str], dict[str, dict[str, list[int]]]] = {}
    for cell in summary["cells"]:
        conf, method, seed = str(cell.get("configuration")), str(cell.get("method")), int(cell.get("seed", -1))
        grid.setdefault((conf, method), []).append(seed)
        if (conf, str(cell.get("cell"))) in present:
            continue
        if cell.get("status") == "failed":
            reason = (f"failed ({cell.get('reason') or 'no reason recorded'})", "")
        elif cell.get("status") == "done":
            reason = ("collected as done but its folder is missing", "")
        else:  # why it has not run, when the collect command was told (--not-run-reason)
            reason = ("not run", str(cell.get("reason") or ""))
        by_reason.setdefault(reason, {}).setdefault(conf, {}).setdefault(method, []).append(seed)
    if not by_reason:
        return f"Every cell of the grid ({len(summary['cells'])}) is registered."
    parts = []
    for (label, why), confs in by_reason.items():
        count = sum(len(seeds) for methods in confs.values() for seeds in methods.values())
        where = []
        for conf, methods in confs.items():
            if all(sorted(methods.get(m, [])) == sorted(s) for (c, m), s in grid.items() if c == conf):
                where.append(f"{conf}: every cell")
                continue
            listed = [m + ("" if sorted(seeds) == sorted(grid[(conf, m)]) else
                           " seed " + ",".join(str(s) for s in sorted(seeds))) for m, seeds in methods.items()]
            where.append(f"{conf}: " + ", ".join(listed))
        parts.append(f"{count} {label} ({'; '.join(where)})" + (f": {why}" if why else ""))
    total = sum(int(p.split(" ", 1)[0]) for p in parts)
    return f"Missing {total} of {len(summary['cells'])} cells: " + "; ".join(parts) + "."


def generate(body: str, base: Path, where: str) -> str:
    inputs = body.split()
    if len(inputs) != 1:
        raise ReportError(f"{where}: write `leaderboard-table: results/leaderboard` (one folder, what `python -m "
                          "experiments.leaderboard collect` writes)")
    folder = Path(inputs[0]) if Path(inputs[0]).is_absolute() else base / inputs[0]
    summary = _summary(folder, where)
    methods = [m for m in summary["methods"] if isinstance(m, dict) and isinstance(m.get("name"), str)]
    names = {m["name"]: str(m.get("display") or m["name"]) for m in methods}
    reference = summary["reference"]
    if reference not in names:
        raise ReportError(f"{where}: {folder / SUMMARY}: the reference {reference!r} is not one of its methods")
    confs = [str(c.get("name")) for c in summary["configurations"] if isinstance(c, dict)]
    runs = {conf: _runs(folder, conf, set(names), where) for conf in confs}
    comparisons: dict[str, dict[str, Comparison | None]] = {}
    for m in names:
        comparisons[m] = {}
        for conf in confs:
            mine, ref = runs[conf].get(m), runs[conf].get(reference)
            comparisons[m][conf] = (compare(_group(names[m], mine), _group(names[reference], ref), RESAMPLES, SEED)
                                    if mine and ref and m != reference else None)
    flagged = {m["name"]: [str(v) for v in m.get("flagged_views") or []] for m in methods}
    header = ["method", "SynthVTR", "seeds", *(h for _, h in METRICS), f"ΔR@1 vs {names[reference]} [95 % CI]",
              "holds on both", "leakage (computed)", "trainable params", "train step (ms)",
              "eval / query, 1k videos (ms)", "captions / video (generation)", "wall (cell + captions)",
              "machine during the cells", f"{FLAG} flagged view: T2V R@1"]
    rows = []
    present: set[tuple[str, str]] = set()
    for m in names:
        for conf in confs:
            group = runs[conf].get(m)
            if not group:
                continue
            present.update((conf, r.name) for r in group)
            metric_cells = [fmt_mean_std([float(r.metrics[k]) for r in group]) for k, _ in METRICS]
            flag_cells = []
            for view in flagged[m]:
                values = [float(r.metrics[f"{view}/t2v_R1"]) for r in group if f"{view}/t2v_R1" in r.metrics]
                if values:
                    flag_cells.append(f"{FLAG} {view}: {fmt_mean_std(values)}")
            delta = "reference" if m == reference else _delta_cell(comparisons[m][conf])
            costs = [_costs(r, where) for r in group]
            rows.append([names[m], conf, ",".join(str(r.seed) for r in group), *metric_cells, delta,
                         _verdict(m, reference, comparisons[m], confs, names[reference]),
                         _distinct(group, _leakage), *_cost_cells(costs), "; ".join(flag_cells)])
    lines: list[str] = []
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    else:
        lines.append(f"No cell is registered yet in `{inputs[0]}`.")
    lines += ["", *wrap(_provenance(summary, inputs[0], runs)), "", *wrap(_missing_line(summary, present))]
    return "\n".join(lines)


def _provenance(summary: dict[str, Any], folder: str, runs: dict[str, dict[str, list[Run]]]) -> str:
    every = [r for by_method in runs.values() for group in by_method.values() for r in group]
    commits = " / ".join(dict.fromkeys(_commit(r) for r in every)) or "— (no cell yet)"
    copies = []
    for conf in summary["configurations"]:
        data = conf.get("data") or {}
        generator = data.get("generator") or {}
        if data:
            tested = [r for group in runs.get(str(conf.get("name")), {}).values() for r in group]
            test = _distinct(tested, lambda r: f"{r.record.get('num_texts')} queries × {r.record.get('num_videos')} "
                             "videos") if tested else "no run yet"
            oracle = {(r.record.get("data") or {}).get("oracle", {}).get("R@1") for r in tested} - {None}
            copies.append(f"{conf.get('name')} `{data.get('fingerprint')}` (content "
                          f"{str(data.get('content_sha256'))[:12]}, {data.get('files')} files; "
                          f"{generator.get('num_families')} families of {generator.get('family_size')}, detail "
                          f"{generator.get('detail')}, generator seed {generator.get('generator_seed', 0)}; test "
                          f"{test}" + (f", caption-consistent oracle T2V R@1 {min(oracle):.1f}" if len(oracle) == 1
                                       else "") + ")")
        else:
            copies.append(f"{conf.get('name')} not prepared")
    settings = summary.get("settings") or {}
    overrides = [*(f"--data {d}" for d in settings.get("data") or []),
                 *(f"{k} {a}" for key, k in (("args", "--arg"), ("csi_args", "--csi-arg"), ("care_args", "--care-arg"))
                   for a in settings.get(key) or [])]
    return (f"Generated from `{folder}` ({len(every)} of {len(summary['cells'])} cells registered) by `{COMMAND}`; "
            f"cells run by `python -m experiments.leaderboard run` from each method's shipped config. Commit "
            f"{commits}; data copies (one per configuration, every file checked against its "
            f"manifest before each cell): {'; '.join(copies)}. ΔR@1: pooled paired bootstrap over queries "
            f"({RESAMPLES:,} resamples, seed {SEED}). Costs: trainable parameters when fitting starts; the median "
            "training step (forward, backward, optimiser); the test queries scored against the test videos' features "
            "repeated to 1,000 (encoding excluded) per query; captions counted in the store, their generation "
            "timed by the leaderboard (simulated: SynthVTR's simulated captioner); wall time of the cell plus its "
            "captions, median over seeds; the machine 'shared' when the mean 1-minute load exceeded its CPUs"
            + (f". Overrides: {' '.join(overrides)}" if overrides else "") + ".")


def _commit(run: Run) -> str:
    sha = str(run.record.get("git_sha") or "not recorded")[:7]
    if run.record.get("git_dirty") is True:
        sha += f" + uncommitted changes (diff {str(run.record.get('git_diff_sha256') or 'not recorded')[:8]})"
    return sha


def render(text: str, name: str, base: Path) -> tuple[str, list[Stale]]:
    """``text`` with every leaderboard block regenerated, and (where, old, new) for each stale block."""
    return render_blocks(text, name, base, "leaderboard-table", generate)

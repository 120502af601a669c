"""``results-table`` blocks: tables of mean ± std over seeds generated from committed results (the results registry).

``python -m experiments.tables`` regenerates them, with the other block kinds, in README.md, docs/ and every
results/**/README.md (``--check``: exit 1 with a unified diff when a block is stale); see ``experiments/tables/cli.py``.

A block is an HTML comment (invisible on GitHub) that says where the numbers come from, followed by the generated
table and a closing comment::

    <!-- results-table: results/clip_init_synthvtr
         group: (.*)_s\\d+$
         columns: t2v_R1, t2v_R5, v2t_R1 = V2T R@1, rsum
         rows: A_old = before; B_new = after
         provenance: yes -->
    | group | t2v R@1 | ...
    <!-- /results-table -->

Fields are ``name: value``, one per line or separated by `` | `` (a pipe with spaces around it) on one line; a
list (``columns``, ``rows``) continues on the next line after a trailing ``,`` or ``;``:

- ``results-table``: run folders or globs (relative to the repository root, whichever file holds the block),
  separated by spaces or commas.
- ``group`` (optional): a regex over each run's folder name; its first capture group (else the whole match) is the
  run's group. Without it, runs are grouped as the comparison report groups them (model class, dataset, protocol,
  config without seed, code version; re-tests set apart) and a group is named by its report label.
- ``columns``: metric keys of ``metrics.json`` (``t2v_R1``, a view's ``video/t2v_R1``) or dotted paths into it
  (``data.oracle.R@1``) or into another JSON file of the run's ``test/`` folder named by the first part
  (``expert_usage.entropy_bits``), each optionally ``key = header``; ``seeds`` lists the seeds. A cell is the
  mean ± sample std over the group's runs (the plain value for one run); a text value (``precision``) shows its
  distinct values.
  A key that no run of a group has is ``—`` when another row has it (CLIP4Clip has no ``narration/`` view), else
  an error (a typo).
- ``rows`` (optional): ``group = display name`` entries separated by ``;``: only these groups, in this order.
  ``group@view = name`` shows the group's ``view/<column>`` metrics (blank where the view has none).
- ``bold`` (optional): rows (``group`` or ``group@view``, separated by ``;``) whose values are shown in bold.
- ``digits`` (default 2), ``label`` (header of the first column, default ``group``).
- ``provenance: yes``: a line under the table from the artifacts (seeds, backbone, dataset and generator,
  precision, commit, queries × videos, and the computed ``leakage`` verdict of every run).
- ``paper`` (optional): ``group = method`` entries separated by ``;``: a last column with that method's t2v R@1 from
  ``configs/paper_results.csv`` (backbone and dataset shown; ``—`` for groups not named).
- ``oracle: yes``: SynthVTR's caption-consistent oracle and chance rows from ``data.oracle`` of ``metrics.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.results.runs import Group, ReportError, Run, discover, fmt_value, group_runs, split_retests
from experiments.results.sections import provenance as report_provenance
from experiments.results.stats import fmt_mean_std
from experiments.tables.blocks import COMMAND, Stale, wrap

START = re.compile(r"^<!--[ \t]*results-table[ \t]*:(?P<body>.*?)-->", re.M | re.S)
END = "<!-- /results-table -->"
MAX_MARKER = 90  # characters of the marker line quoted in messages
FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
FIELDS = ("results-table", "group", "columns", "rows", "bold", "digits", "label", "provenance", "oracle", "paper")
YES = {"yes", "true", "on", "1"}
NO = {"no", "false", "off", "0"}
ORACLE_ROWS = (("caption-consistent oracle (ceiling)", {"t2v_R1": "R@1", "t2v_R5": "R@5", "t2v_R10": "R@10"}),
               ("chance", {"t2v_R1": "chance_R@1"}))


class BlockError(ReportError):
    """A results-table block that cannot be generated; the message starts with ``file:line: marker:``."""


@dataclass
class Spec:
    """What one marker asks for."""

    where: str                           # "README.md:57: <!-- results-table: results/demo"
    inputs: list[str]
    columns: list[tuple[str, str]]       # (metric key, header)
    group: re.Pattern[str] | None = None
    rows: list[tuple[str, str | None]] | None = None
    digits: int = 2
    label: str = "group"
    paper: dict[str, str] = field(default_factory=dict)  # group -> method of configs/paper_results.csv (its t2v R@1)
    provenance: bool = False
    oracle: bool = False
    bold: list[str] = field(default_factory=list)   # row keys (as in rows:) whose values are shown in bold
    shared_columns: set[str] = field(default_factory=set)  # columns some row has: "—" where a whole group lacks it

    def error(self, what: str) -> BlockError:
        return BlockError(f"{self.where}: {what}")


@dataclass
class Block:
    spec: Spec
    start: int          # offset just after the marker comment
    end: int            # offset of the closing marker


# ---------------------------------------------------------------- parsing
def default_header(key: str) -> str:
    """``t2v_R1`` -> ``t2v R@1``, ``t2v_MdR`` -> ``t2v MdR``, ``video/t2v_R1`` -> ``video t2v R@1``."""
    return re.sub(r"_R(\d+)\b", r" R@\1", key.replace("/", " ")).replace("_", " ")


def _flag(value: str, name: str, where: str) -> bool:
    if value.lower() in YES or value == "":
        return True
    if value.lower() in NO:
        return False
    raise BlockError(f"{where}: {name}: expected yes or no, got {value!r}")


def _split_fields(body: str) -> list[str]:
    """The marker's fields; the first is the value of ``results-table:`` itself (empty when none)."""
    parts = [part.strip() for line in body.splitlines() for part in re.split(r" \| ", line)]
    return parts[:1] + [p for p in parts[1:] if p]


def _pair(entry: str) -> tuple[str, str | None]:
    """``key = display`` (first `` = ``, else first ``=``) -> (key, display); ``key`` -> (key, None)."""
    sep = " = " if " = " in entry else "=" if "=" in entry else None
    if sep is None:
        return entry.strip(), None
    key, display = entry.split(sep, 1)
    return key.strip(), display.strip()


def parse_spec(body: str, where: str) -> Spec:
    parts = _split_fields(body)
    values: dict[str, str] = {"results-table": parts[0] if parts else ""}
    last = "results-table"
    for part in parts[1:]:
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if values[last].endswith((",", ";")) and not (sep and name in FIELDS):
            values[last] += " " + part  # a list continued on the next line after its `,` or `;`
            continue
        if not sep or name not in FIELDS or name == "results-table":
            raise BlockError(f"{where}: unknown field {part!r}; fields are `name: value`, one of "
                             + ", ".join(FIELDS[1:]) + " (a list continues on the next line after `,` or `;`)")
        if name in values:
            raise BlockError(f"{where}: field {name!r} given twice")
        values[name] = value.strip()
        last = name
    inputs = [p for p in re.split(r"[\s,]+", values["results-table"]) if p]
    if not inputs:
        raise BlockError(f"{where}: no results folder; write `results-table: results/<study>` (folders or globs)")
    if not values.get("columns"):
        raise BlockError(f"{where}: no `columns:` field; list metric keys of metrics.json, e.g. "
                         "`columns: t2v_R1, t2v_R5, rsum`")
    columns = []
    for entry in values["columns"].split(","):
        key, header = _pair(entry)
        if not key:
            raise BlockError(f"{where}: columns: empty entry in {values['columns']!r}")
        columns.append((key, header or default_header(key)))
    spec = Spec(where, inputs, columns)
    if "group" in values:
        try:
            spec.group = re.compile(values["group"])
        except re.error as err:
            raise BlockError(f"{where}: group: {values['group']!r} is not a valid regex ({err})") from err
    if "rows" in values:
        spec.rows = []
        for entry in values["rows"].split(";"):
            key, display = _pair(entry)
            if not key:
                raise BlockError(f"{where}: rows: empty entry in {values['rows']!r}; entries are "
                                 "`group = display name` separated by `;`")
            spec.rows.append((key, display))
    if "digits" in values:
        if not values["digits"].isdigit():
            raise BlockError(f"{where}: digits: expected a whole number, got {values['digits']!r}")
        spec.digits = int(values["digits"])
    spec.label = values.get("label") or spec.label
    spec.provenance = _flag(values.get("provenance", "no"), "provenance", where)
    spec.oracle = _flag(values.get("oracle", "no"), "oracle", where)
    spec.bold = [key.strip() for key in values.get("bold", "").split(";") if key.strip()]
    for entry in values.get("paper", "").split(";"):
        if entry.strip():
            key, method = _pair(entry)
            if not method:
                raise BlockError(f"{where}: paper: write `group = <method of paper_results.csv>`, got {entry!r}")
            spec.paper[key] = method
    return spec


def _fenced(text: str) -> list[tuple[int, int]]:
    """Offsets of fenced code blocks (a marker shown as an example inside one is not a block)."""
    spans, opened = [], None
    for m in FENCE.finditer(text):
        if opened is None:
            opened = m.start()
        else:
            spans.append((opened, m.end()))
            opened = None
    if opened is not None:
        spans.append((opened, len(text)))
    return spans


def find_blocks(text: str, name: str) -> list[Block]:
    fences = _fenced(text)
    starts = [m for m in START.finditer(text) if not any(a <= m.start() < b for a, b in fences)]
    blocks = []
    for i, m in enumerate(starts):
        line = text.count("\n", 0, m.start()) + 1
        marker = m.group(0).splitlines()[0].strip()
        where = f"{name}:{line}: {marker if len(marker) <= MAX_MARKER else marker[:MAX_MARKER - 1] + '…'}"
        end = text.find(END, m.end())
        limit = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        if end < 0 or end > limit:
            raise BlockError(f"{where}: no closing `{END}` before the "
                             + ("next results-table block" if i + 1 < len(starts) else "end of the file"))
        blocks.append(Block(parse_spec(m.group("body"), where), m.end(), end))
    return blocks


# ---------------------------------------------------------------- generation
@dataclass
class Row:
    name: str           # the group's name (regex capture or report label)
    display: str
    group: Group
    view: str | None = None


def _run_value(run: Run, key: str) -> Any:
    """``key`` from the run's ``metrics.json`` (a metric or a dotted path), else from another JSON file next to it
    named by the key's first part (``expert_usage.entropy_bits``: ``expert_usage.json``, in ``test/`` of a run
    folder)."""
    try:
        return _lookup(run.record, key)
    except KeyError:
        head, _, rest = key.partition(".")
        path = run.test_dir / f"{head}.json"
        if not rest or not re.fullmatch(r"[A-Za-z0-9_]+", head) or not path.is_file():
            raise
        import json

        try:
            return _lookup({"metrics": {}, **json.loads(path.read_text())}, rest)
        except ValueError as err:
            raise KeyError(key) from err


def _lookup(record: dict[str, Any], key: str) -> Any:
    metrics = record.get("metrics") or {}
    if key in metrics:
        return metrics[key]
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def load_groups(spec: Spec, base: Path) -> dict[str, Group]:
    inputs = [item if Path(item).is_absolute() else str(base / item) for item in spec.inputs]
    try:
        runs, _ = discover(inputs)
    except ReportError as err:
        raise spec.error(str(err)) from err
    if spec.group is None:
        kept, _ = split_retests(runs)
        return {g.label: g for g in group_runs(kept)}
    named: dict[str, list[Run]] = {}
    for run in runs:
        m = spec.group.search(run.name)
        if m is None:
            raise spec.error(f"run folder {run.path} (name {run.name!r}) does not match group "
                             f"{spec.group.pattern!r}; change the regex or narrow the folders")
        named.setdefault(m.group(1) if m.groups() else m.group(0), []).append(run)
    return {name: Group((name,), sorted(members, key=lambda r: (r.seed is None, r.seed or 0, str(r.path))))
            for name, members in sorted(named.items())}


def select_rows(spec: Spec, groups: dict[str, Group]) -> list[Row]:
    if spec.rows is None:
        return [Row(name, name, g) for name, g in groups.items()]
    rows = []
    for key, display in spec.rows:
        name, view = key, None
        if key not in groups and "@" in key:
            name, view = key.rsplit("@", 1)
            name, view = name.strip(), view.strip()
        if name not in groups:
            raise spec.error(f"rows: no group {name!r}; the groups are: " + "; ".join(repr(g) for g in groups))
        rows.append(Row(name, display or name + (f" ({view})" if view else ""), groups[name], view))
    return rows


def _cell(spec: Spec, row: Row, key: str) -> str:
    if key == "seeds":
        return ",".join(str(s) for s in row.group.seeds())
    full = f"{row.view}/{key}" if row.view else key
    values, missing = [], []
    for run in row.group.runs:
        try:
            value = _run_value(run, full)
        except KeyError:
            missing.append(run)
            continue
        if isinstance(value, (dict, list)):
            raise spec.error(f"column {full!r}: {run.record_path} holds a "
                             f"{type(value).__name__} there, not a value; name a key inside it")
        values.append(value)
    if missing and row.view and not values:
        return ""
    if missing and not values and key in spec.shared_columns:  # a method without that view (CLIP4Clip: narration)
        return "—"
    if missing:
        raise spec.error(f"column {full!r}: absent from {missing[0].record_path}"
                         + (f" (and {len(missing) - 1} more runs)" if len(missing) > 1 else "")
                         + "; use a key of its `metrics` object or a dotted path into the file")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return fmt_mean_std([float(v) for v in values], spec.digits)
    return " / ".join(dict.fromkeys(fmt_value(v) for v in values))  # text (precision, ...): each distinct value


def _has(row: Row, key: str) -> bool:
    full = f"{row.view}/{key}" if row.view else key
    for run in row.group.runs:
        try:
            _run_value(run, full)
            return True
        except KeyError:
            continue
    return False


def _oracle(spec: Spec, groups: list[Group]) -> dict[str, float]:
    found: dict[str, tuple[float, ...]] = {}
    keys = ("R@1", "R@5", "R@10", "chance_R@1")
    for run in (r for g in groups for r in g.runs):
        oracle = run.record.get("data", {}).get("oracle")
        if not isinstance(oracle, dict) or any(not isinstance(oracle.get(k), (int, float)) for k in keys):
            raise spec.error(f"oracle: {run.record_path} records no data.oracle with "
                             + ", ".join(keys) + " (only SynthVTR runs have one)")
        found[str(run.path)] = tuple(float(oracle[k]) for k in keys)
    if len(set(found.values())) > 1:
        raise spec.error("oracle: the runs record different data.oracle values (different test sets): "
                         + "; ".join(f"{p}: {v}" for p, v in found.items()))
    return dict(zip(keys, next(iter(found.values())), strict=True))


def _md_row(cells: list[str]) -> str:
    """One markdown table row; an empty cell is written `| |`."""
    escaped = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
    return "|" + "|".join(f" {c} " if c else " " for c in escaped) + "|"


def _dataset(run: Run) -> str:
    gen = run.record.get("data", {}).get("generator") or {}
    version = gen.get("version") or run.record.get("data", {}).get("generator_version")
    parts = [str(v) for v in (version, gen.get("fingerprint")) if v]
    content = gen.get("content_sha256")  # the exact copy (its manifest's digest); absent before synthvtr-1.2
    copy = f", content {content[:12]}" + ("" if gen.get("content_verified") else " (files differ from it)") \
        if content else ""
    return run.dataset + (f" (generator {' '.join(parts)}{copy})" if parts else "")


def _test_set(run: Run) -> str:
    protocol = run.record.get("data", {}).get("protocol")
    return (f"{run.record.get('num_texts', '?')} queries × {run.record.get('num_videos', '?')} videos"
            + (f" ({protocol})" if protocol else ""))


def _commit(run: Run) -> str:
    """The commit, and for a run made with uncommitted changes (``git_dirty: true``, registered with
    ``--allow-dirty``) the hash of its diff; a run that predates the field says nothing more."""
    sha = str(run.record.get("git_sha") or "not recorded")[:7]
    if run.record.get("git_dirty") is True:
        sha += f" + uncommitted changes (diff {str(run.record.get('git_diff_sha256') or 'not recorded')[:8]})"
    return sha


def _distinct(group: Group, fn: Callable[[Run], str]) -> str:
    return " / ".join(dict.fromkeys(fn(r) for r in group.runs))


PROVENANCE: tuple[tuple[str, Callable[[Group], str]], ...] = (
    ("seeds", lambda g: report_provenance(g, "seeds")),
    ("backbone", lambda g: report_provenance(g, "backbone")),
    ("dataset", lambda g: _distinct(g, _dataset)),
    ("precision", lambda g: report_provenance(g, "precision")),
    ("commit", lambda g: _distinct(g, _commit)),
    ("test", lambda g: _distinct(g, _test_set)),
    # the computed leakage verdict of every run (metrics.json `leakage`, from its lineage), on every table
    ("leakage", lambda g: report_provenance(g, "leakage")),
)


def provenance_line(spec: Spec, rows: list[Row]) -> str:
    """``name value`` when every row shares it, else ``name value (rows) / value (rows)``."""
    groups = {id(r.group): r.group for r in rows}
    shown = {id(r.group): r.display for r in reversed(rows)}   # a group's first row names it
    parts = []
    for name, fn in PROVENANCE:
        by_value: dict[str, list[str]] = {}
        for key, group in groups.items():
            by_value.setdefault(fn(group), []).append(shown[key])
        if len(by_value) == 1:
            parts.append(f"{name} {next(iter(by_value))}")
        else:
            parts.append(f"{name} " + " / ".join(f"{v} ({', '.join(who)})" for v, who in by_value.items()))
    runs = sum(len(g.runs) for g in groups.values())
    return (f"Generated from `{' '.join(spec.inputs)}` ({runs} runs) by `{COMMAND}`: "
            + "; ".join(parts) + ".")


def _paper_cell(spec: Spec, group: str) -> str:
    """The paper's t2v R@1 for ``group`` (``paper:`` field) from configs/paper_results.csv, or ``—``."""
    from experiments.results.papers import load_papers

    method = spec.paper.get(group)
    if method is None:
        return "—"
    found = [p for p in load_papers() if p.method == method and p.metric == "t2v_R1"]
    if len(found) != 1:
        raise spec.error(f"paper: {method!r} has {len(found)} t2v_R1 rows in configs/paper_results.csv (need one)")
    return f"{found[0].value:.1f} ({found[0].backbone}, {found[0].dataset} {found[0].split})"


def generate(spec: Spec, base: Path) -> str:
    """The markdown a block holds: the table, then the provenance line when asked for."""
    rows = select_rows(spec, load_groups(spec, base))
    paper_header = ["paper t2v R@1"] if spec.paper else []
    lines = [_md_row([spec.label, *(h for _, h in spec.columns), *paper_header]),
             "|" + "---|" * (len(spec.columns) + 1 + len(paper_header))]
    keys = {row.name + (f"@{row.view}" if row.view else "") for row in rows}
    unknown = [key for key in spec.bold if key not in keys]
    if unknown:
        raise spec.error(f"bold: no row {unknown[0]!r}; the rows are: " + "; ".join(repr(k) for k in sorted(keys)))
    spec.shared_columns = {k for k, _ in spec.columns if any(_has(row, k) for row in rows)}
    for row in rows:
        cells = [_cell(spec, row, k) for k, _ in spec.columns]
        if row.name + (f"@{row.view}" if row.view else "") in spec.bold:
            cells = [f"**{c}**" if c and k != "seeds" else c for c, (k, _) in zip(cells, spec.columns, strict=True)]
        if spec.paper:
            cells.append(_paper_cell(spec, row.name))
        lines.append(_md_row([row.display, *cells]))
    if spec.oracle:
        oracle = _oracle(spec, [r.group for r in rows])
        if not any(k in dict(spec.columns) for k in ("t2v_R1", "t2v_R5", "t2v_R10")):
            raise spec.error("oracle: needs a t2v_R1, t2v_R5 or t2v_R10 column to put the oracle's values in")
        for display, keys in ORACLE_ROWS:
            cells = [f"{oracle[keys[k]]:.{spec.digits}f}" if k in keys else "" for k, _ in spec.columns]
            lines.append(_md_row([display, *cells]))
    if spec.provenance:
        lines += ["", *wrap(provenance_line(spec, rows))]
    return "\n".join(lines)


# ---------------------------------------------------------------- a file
def render(text: str, name: str, base: Path) -> tuple[str, list[Stale]]:
    """``text`` with every results-table block regenerated (paths relative to ``base``), and the stale blocks as
    (where, old content, new content), as the other block kinds' ``render``."""
    out, pos, stale = [], 0, []
    for block in find_blocks(text, name):
        new = "\n" + generate(block.spec, base) + "\n"
        old = text[block.start:block.end]
        if old != new:
            stale.append((block.spec.where, old, new))
        out += [text[pos:block.start], new]
        pos = block.end
    out.append(text[pos:])
    return "".join(out), stale


def count(text: str) -> int:
    """How many results-table blocks ``text`` holds (examples inside fenced code are not blocks)."""
    return len(find_blocks(text, "<count>"))

"""README paired comparisons generated from the results registry (the report's own sections, as markdown).

    <!-- comparison-table: results/narvid_vs_clip4clip -->
    <!-- /comparison-table -->

The inputs (folders or globs, relative to the repository root) are grouped as the comparison report groups them
(``<!-- comparison-table: <folders> | merge-commits -->`` merges code versions, as the report's
``--merge-commits``: for runs made at commits whose model code is the same). When
they hold the same methods tested on two or more SynthVTR configurations, the block is the report's "Robustness"
section (ΔR@1 with its paired-bootstrap interval on each configuration and whether the result holds on all of
them); otherwise it is the "Paired comparison" section. Bootstrap settings are the report's defaults (10,000
resamples, seed 0), so the block equals what ``python -m experiments.report <inputs>`` prints.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from experiments.results import robustness
from experiments.results.render import md_blocks
from experiments.results.runs import ReportError, discover, group_runs, split_retests
from experiments.results.sections import comparison_section
from experiments.results.stats import compare, same_test_set
from experiments.tables.blocks import Stale, block_start, render_blocks, wrap

START = block_start("comparison-table")
RESAMPLES, SEED = 10_000, 0


def generate(body: str, base: Path, where: str) -> str:
    first, *flags = [part.strip() for part in re.split(r"\s\|\s", " ".join(body.split()))]
    unknown = [f for f in flags if f != "merge-commits"]
    if unknown:
        raise ReportError(f"{where}: unknown option {unknown[0]!r}; the only option is `| merge-commits`")
    inputs = [p for p in re.split(r"[\s,]+", first) if p]
    if not inputs:
        raise ReportError(f"{where}: name the results folders, `comparison-table: results/<study> ...`")
    try:
        runs, _ = discover([item if Path(item).is_absolute() else str(base / item) for item in inputs])
    except ReportError as err:
        raise ReportError(f"{where}: {err}") from err
    kept, _ = split_retests(runs)
    groups = group_runs(kept, merge_commits="merge-commits" in flags)
    section = robustness.section(groups, None, RESAMPLES, SEED)
    if section is None:
        pairs = [(a, b) for a, b in itertools.combinations(groups, 2) if a.dataset == b.dataset and same_test_set(a, b)]
        if not pairs:
            raise ReportError(f"{where}: the inputs hold no two groups tested on the same queries")
        section = comparison_section([compare(a, b, RESAMPLES, SEED) for a, b in pairs], [], RESAMPLES)
    labels = "; ".join(f"**{g.ident}** {g.label} ({len(g.runs)} runs)" for g in groups)
    lines = []
    for line in [f"Groups: {labels}.", "", *md_blocks(section.blocks)]:
        lines += [line] if line.startswith("|") or not line else wrap(line)
    return "\n".join(lines).rstrip("\n")


def render(text: str, name: str, base: Path) -> tuple[str, list[Stale]]:
    """``text`` with every comparison block regenerated, and (where, old, new) for each stale block."""
    return render_blocks(text, name, base, "comparison-table", generate)

"""Comparison report from run artifacts only (docs/how-to/comparison-report.md).

    python -m experiments.report runs/sweeps/narvid-vs-clip4clip --out reports/narvid_vs_clip4clip
    python -m experiments.report 'runs/*/version_*' --out reports/all --compare G1 G2

Modules: ``cli`` (the report's own sections and the command line), ``plots`` (matplotlib, Agg), ``browser`` (the
query browser: texts, thumbnails, filters), ``wandb_log`` (``--wandb``). What it shares with the README/docs tables
and the results registry (reading runs, stats, the papers' CSV, rendering, robustness, provenance) is in
``experiments/results/``.
"""

from experiments.report.cli import main
from experiments.results.errors import ReportError

__all__ = ["ReportError", "main"]

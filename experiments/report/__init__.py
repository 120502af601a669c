"""Comparison report from run artifacts only (README "Comparison report").

    python -m experiments.report runs/sweeps/narvid-vs-clip4clip --out reports/narvid_vs_clip4clip
    python -m experiments.report 'runs/*/version_*' --out reports/all --compare G1 G2

Modules: ``runs`` (finding, loading and grouping runs), ``stats`` (mean ± std, paired bootstrap), ``papers``
(``configs/paper_results.csv``), ``plots`` (matplotlib, Agg), ``render`` (markdown + self-contained HTML),
``browser`` (the query browser: texts, thumbnails, filters), ``robustness`` (the same comparisons on several SynthVTR
configurations), ``wandb_log`` (``--wandb``), ``cli`` (the sections and the command line); ``registry`` (the
results registry's compact format), ``register`` and ``migrate`` (putting runs into it), ``readme`` (README blocks).
"""

from experiments.report.cli import main
from experiments.report.runs import ReportError

__all__ = ["ReportError", "main"]

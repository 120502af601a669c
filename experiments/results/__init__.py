"""What the comparison report, the README/docs tables and the results registry share; no command line here.

Modules: ``errors`` (the one error type), ``runs`` (finding, loading and grouping runs: run folders and registered
runs), ``registry_format`` (the results registry's compact files: per-query ranks, test sets, atomic writes),
``stats`` (mean ± std, paired bootstrap), ``papers`` (``configs/paper_results.csv``), ``render`` (sections as
markdown and self-contained HTML), ``robustness`` (the same comparison on several SynthVTR configurations) and
``sections`` (the provenance columns, the paired-comparison section and the metric recheck).
"""

"""The generated tables of README.md, docs/**/*.md and results/**/README.md, from committed results.

    python -m experiments.tables            # regenerate every stale block in place
    python -m experiments.tables --check    # exit 1 with a unified diff naming the file and line of a stale block

Modules: ``cli`` (which files, --check, writing), ``blocks`` (what every block kind shares), one module per block
kind: ``results_table``, ``reproduction``, ``json_table``, ``comparison_block``, ``leaderboard_block``.
"""

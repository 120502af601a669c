"""``python -m experiments.report``."""

from experiments.report.cli import cli

cli()

from experiments.care_dpo.cli import cli

cli()

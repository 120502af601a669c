from experiments.csi.cli import cli

cli()

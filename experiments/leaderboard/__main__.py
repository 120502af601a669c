from experiments.leaderboard.cli import cli

cli()

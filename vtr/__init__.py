"""The ``vtr`` command and the files the suite ships besides its code.

* ``command.py``: ``vtr`` (console script; ``python -m vtr``), one command for the whole suite: ``vtr fit`` and
  the other LightningCLI subcommands, and ``vtr prepare``, ``vtr sweep``, ``vtr report``... for the module CLIs;
* ``lightning_cli.py``: the LightningCLI (``vtr fit|validate|test|predict``; ``python main.py`` in a checkout);
* ``resources.py``: the shipped configs and sweep files, from any directory.

Importing this package imports nothing else, so ``vtr --help`` answers at once.
"""

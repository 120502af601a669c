"""``python main.py {fit,validate,test,predict} --config configs/...yaml``: the suite's LightningCLI, in a checkout.

The CLI lives in ``vtr/lightning_cli.py`` so that an installed vtr (``pip install .``) carries it as the ``vtr``
command (``vtr fit --config configs/quickstart.yaml`` from any directory); this file keeps the checkout's commands
and ``from main import main`` working.
"""

from vtr.lightning_cli import VTRCLI, main

__all__ = ["VTRCLI", "main"]

if __name__ == "__main__":
    main()

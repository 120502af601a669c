"""``python -m datamodules.synthvtr``: the generator's command line (``datamodules/synthvtr/cli.py``)."""

import sys

from datamodules.synthvtr.cli import main

if __name__ == "__main__":
    sys.exit(main())

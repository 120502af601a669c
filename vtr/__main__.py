"""``python -m vtr``: the ``vtr`` command (``vtr/command.py``)."""

import sys

from vtr.command import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m experiments.tables``."""

import sys

from experiments.tables.cli import main

sys.exit(main())

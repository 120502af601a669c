import sys

from experiments.search.cli import main

sys.exit(main())

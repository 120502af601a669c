"""A module that ends with ``sys.exit(message)`` naming its arguments (``tests/vtr/test_command.py`` runs it)."""

import sys

if __name__ == "__main__":
    sys.exit(f"exiting: {sys.argv[1:]}")

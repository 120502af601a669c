"""Fixtures of tests/datamodules/: the pristine dataset copies a test breaks (tests/datamodule_helpers.py)."""

from tests.datamodule_helpers import copy_of, pristine

__all__ = ["copy_of", "pristine"]

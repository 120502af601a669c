"""The report's one error type, in a module of its own so that ``runs`` and ``registry`` can both raise it."""

from __future__ import annotations


class ReportError(ValueError):
    """Bad input to the report: the message names the file and what to do about it."""

"""The shared error type (experiments/results/errors.py): what the runs reader and the registry format both raise,
so each program catches one type and prints the message that names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.results import registry_format
from experiments.results.errors import ReportError
from experiments.results.runs import discover


def test_it_is_a_value_error_that_keeps_its_message() -> None:
    err = ReportError("results/x/metrics.json: bad")
    assert isinstance(err, ValueError) and str(err) == "results/x/metrics.json: bad"


def test_the_runs_reader_and_the_registry_format_raise_it_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"nothing_\*.*matches nothing"):
        discover([str(tmp_path / "nothing_*")])
    record = tmp_path / "run" / "metrics.json"
    record.parent.mkdir()
    record.write_text(json.dumps({"registry": {"format": 99}}))
    with pytest.raises(ReportError, match=rf"{record}.*not a format-{registry_format.FORMAT} registry record"):
        registry_format.registry_info(json.loads(record.read_text()), record)

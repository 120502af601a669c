"""``json-table`` blocks (experiments/tables/json_table.py) from a results JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.tables.cli import main


def test_json_table_from_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = tmp_path / "results" / "benchmarks" / "step.json"
    bench.parent.mkdir(parents=True)
    bench.write_text(json.dumps({"benchmark": "benchmarks/train_step.py", "device": "cpu", "rows": [
        {"method": "A", "ms_median": 12.345}, {"method": "B | C", "ms_median": 1500.0}]}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- json-table: results/benchmarks/step.json\n     | columns: method, ms_median = ms -->\n"
                      "<!-- /json-table -->\n")
    assert main([str(readme)]) == 0
    text = readme.read_text()
    assert "| method | ms |\n|---|---|\n| A | 12.35 |\n| B \\| C | 1,500 |" in text
    assert "benchmark benchmarks/train_step.py; device cpu." in " ".join(text.split())  # wrapped
    assert main(["--check", str(readme)]) == 0
    bench.write_text(json.dumps({"rows": [{"method": "A"}]}))
    capsys.readouterr()
    assert main(["--check", str(readme)]) == 2
    assert "row 0 has no ['ms_median']" in capsys.readouterr().err

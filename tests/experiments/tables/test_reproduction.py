"""The reproduction table (experiments/tables/reproduction.py) from registered runs and the papers' CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.tables.cli import main
from tests.tables_helpers import (
    DEMO,
    copy_run,
)


def test_reproduction_table_from_results_and_paper_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "results" / "demo"
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        copy_run(DEMO / name, study / name)
    rows = ("- {method: meanP, dataset: SynthVTR, backbone: two-tower, command: '`make demo`', "
            "results: results/demo/clip4clip_meanP}\n"
            "- {method: NarVid, dataset: MSR-VTT, backbone: B/32, command: x, not_run: no GPU, "
            "paper: {method: NarVid, dataset: msrvtt, backbone: ViT-B/32, split: 1k-A}}\n")
    (tmp_path / "repro.yaml").write_text(rows)
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- reproduction-table: repro.yaml -->\n<!-- /reproduction-table -->\n")
    assert main([str(readme)]) == 0
    r1 = json.loads((DEMO / "clip4clip_meanP" / "metrics.json").read_text())["metrics"]["t2v_R1"]
    text = readme.read_text()
    assert f"| meanP | SynthVTR | two-tower | `make demo` | {r1:.2f} (seed 0; `results/demo/clip4clip_meanP`) | — |" \
        in text
    assert "| NarVid | MSR-VTT | B/32 | x | not run here (no GPU) | 51.0 |" in text  # NarVid Table 1, ViT-B/32
    assert main(["--check", str(readme)]) == 0
    capsys.readouterr()

    (tmp_path / "repro.yaml").write_text(rows.replace("split: 1k-A", "split: 7k"))
    assert main(["--check", str(readme)]) == 2
    assert "repro.yaml row 2: paper {" in capsys.readouterr().err
    (tmp_path / "repro.yaml").write_text(rows.replace("results/demo/clip4clip_meanP", "results/none"))
    assert main(["--check", str(readme)]) == 2
    assert "repro.yaml row 1" in capsys.readouterr().err

"""Helpers of the generated-tables tests (tests/experiments/tables/): copies of committed registered runs in a
temporary repository, a README with blocks, running the generator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.tables.cli import main

ROOT = Path(__file__).resolve().parents[1]  # the repository
CLIP_INIT = ROOT / "results" / "clip_init_synthvtr"
DEMO = ROOT / "results" / "demo"


def copy_run(src: Path, dst: Path) -> Path:
    """A registered run's folder, and the study's test set file it names (its query ids live there)."""
    shutil.copytree(src, dst)
    test_set = json.loads((src / "metrics.json").read_text())["registry"]["test_set"]
    if test_set and not (dst.parent / test_set).exists():
        shutil.copy(src.parent / test_set, dst.parent / test_set)
    return dst


def edit_metrics(run: Path, **changes: object) -> None:
    path = run / "metrics.json"
    record = json.loads(path.read_text())
    record["metrics"].update(changes)
    path.write_text(json.dumps(record))


def r1(run: Path) -> float:
    return float(json.loads((run / "metrics.json").read_text())["metrics"]["t2v_R1"])


MARKER = """<!-- results-table: results/study
     group: (.*)_s\\d+$
     columns: t2v_R1, t2v_R5 = R@5, seeds
     rows: A_old = before; B_new = after
     provenance: yes -->"""


def write_readme(root: Path, *blocks: str, intro: str = "# study\n\nSome text | with a pipe.\n") -> Path:
    readme = root / "README.md"
    readme.write_text(intro + "\n" + "\n\n".join(f"{b}\n<!-- /results-table -->" for b in blocks) + "\n\nEnd.\n")
    return readme


def generate(readme: Path, capsys: pytest.CaptureFixture[str], check: bool = False) -> tuple[int, str, str]:
    code = main([*(["--check"] if check else []), str(readme)])
    out = capsys.readouterr()
    return code, out.out, out.err


def table_rows(readme: Path) -> dict[str, list[str]]:
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}

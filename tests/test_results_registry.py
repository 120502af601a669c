"""The committed results registry (results/): small enough to clone, compact, free of machine paths, and every
registered run's per-query file agrees with its metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments.results import registry_format as registry
from experiments.results.runs import Run, discover
from experiments.results.sections import recheck
from tests.run_helpers import REPO

RESULTS = REPO / "results"
BLOCK = 4096               # `du` counts whole 4 KiB blocks on ext4: a 1-byte file costs 4 KiB
BUDGET = 15 * 1024 ** 2    # today's studies take 9.3 MB (du -sh results); the old layout took 97 MB


def disk_usage(root: Path) -> int:
    """What ``du -s`` reports on a 4 KiB-block file system: every file rounded up to whole blocks, one block per
    folder (computed, so the figure does not depend on where the checkout lives)."""
    total = BLOCK
    for path in root.rglob("*"):
        total += BLOCK if path.is_dir() else math.ceil(path.stat().st_size / BLOCK) * BLOCK
    return total


@pytest.fixture(scope="module")
def registered() -> list[Run]:
    runs, _ = discover([str(RESULTS)])
    return runs


def test_results_fit_the_budget() -> None:
    used = disk_usage(RESULTS)
    assert used <= BUDGET, (
        f"results/ takes {used / 1024 ** 2:.1f} MiB on disk (budget {BUDGET / 1024 ** 2:.0f} MiB). Register runs "
        "with `python -m experiments.registry.register` (compact files; full matrices go to W&B with --wandb), "
        "gzip large logs, or raise the budget here with a reason.")


def test_no_full_matrix_old_layout_or_machine_path_in_results(registered: list[Run]) -> None:
    assert not list(RESULTS.rglob("*.npy")), "full similarity matrices belong in W&B artifacts (register --wandb)"
    old = sorted(str(p.parent.parent.relative_to(RESULTS)) for p in RESULTS.rglob("test/metrics.json"))
    assert not old, f"runs in the old registry layout (run `python -m experiments.registry.migrate`): {old[:5]}"
    assert len(registered) >= 201 and all(run.registered for run in registered)
    for run in registered:
        for path in run.path.iterdir():
            if path.suffix in (".json", ".yaml"):
                found = registry.EMBEDDED_ABSOLUTE.search(path.read_text())
                assert found is None, f"{path}: holds the machine path {found.group(0)!r}"


def test_every_registered_run_agrees_with_its_per_query_files(registered: list[Run]) -> None:
    with_queries = [r for r in registered if (r.path / registry.QUERIES).is_file()]
    assert len(with_queries) >= 162
    for run in with_queries:
        assert recheck(run) == [], run.path
        for flag in run.postprocessed:
            assert recheck(run, flag) == [], (run.path, flag)

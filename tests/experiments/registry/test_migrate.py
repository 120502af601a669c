"""Migrating the old registry layout (full matrices under test/) to the compact one: README blocks unchanged, the
matrices' sha256 and the commit that still holds them recorded, machine paths gone, big JSONL files gzipped."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from experiments.registry.migrate import main as migrate
from experiments.results import registry_format as registry
from experiments.tables.cli import main as readme_main
from tests.registry_helpers import full_run, scores

BLOCKS = """# study

<!-- results-table: results/study
     group: (.*)_s\\d+$
     columns: t2v_R1, t2v_R5, t2v_MnR, v2t_R1, rsum, seeds
     provenance: yes -->
<!-- /results-table -->

<!-- comparison-table: results/study/A_s* results/study/B_s* -->
<!-- /comparison-table -->
"""


def old_layout(run: Path) -> Path:
    """A run folder as the registry kept it before the compact format: run-level config.yaml and metrics.csv,
    test/ with metrics.json, config.yaml, sim_t2v.npy and the id files; no checkpoint."""
    shutil.rmtree(run / "checkpoints")
    return run


def git(root: Path, *args: str) -> str:
    env_args = ["-c", "user.name=vtr test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *env_args, *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """tmp/results/study: A and B on two seeds, a re-test of A_s0, a metrics-only run, a big and a small JSONL file,
    committed to a git repository; tmp/README.md with a results-table and a comparison-table block over them."""
    study = tmp_path / "results" / "study"
    made = tmp_path / "machine" / "sweep"  # where the runs were made: their absolute paths point there
    for seed in (0, 1):
        for method, offset, header in (("A", 0, "meanP"), ("B", 7, "seqTransf")):
            sim, gt = scores(40, 10, seed + offset)
            old_layout(full_run(made / f"{method}_s{seed}" / "version_0", sim, gt, seed, sim_header=header))
            shutil.copytree(made / f"{method}_s{seed}" / "version_0", study / f"{method}_s{seed}")
    sim, gt = scores(40, 10, 0)
    old_layout(full_run(made / "R_s0" / "version_0", sim, gt, 0, ckpt=made / "A_s0" / "version_0" / "checkpoints" /
                        "best.ckpt", training_rows=False))
    shutil.copytree(made / "R_s0" / "version_0", study / "R_retest_s0")
    metrics_only = shutil.copytree(made / "B_s1" / "version_0", tmp_path / "results" / "ablation" / "C_s1")
    (metrics_only / "test" / "sim_t2v.npy").unlink()  # registered with --no-matrix
    (study / "store.jsonl").write_text("".join(json.dumps({"video_id": f"v{i}", "text": "x" * 50}) + "\n"
                                               for i in range(2000)))
    (study / "rounds.jsonl").write_text('{"round": 0}\n')
    (tmp_path / "README.md").write_text(BLOCKS)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "old registry")
    return tmp_path


def test_migration_keeps_every_readme_block_and_records_where_the_matrices_are(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = repo / "README.md"
    assert readme_main([str(readme), "--root", str(repo)]) == 0  # generated from the old layout
    before = readme.read_text()
    assert "| A |" in before and "ΔR@1" in before
    commit = git(repo, "rev-parse", "HEAD")
    matrix_sha = hashlib.sha256((repo / "results" / "study" / "A_s0" / "test" / "sim_t2v.npy").read_bytes()).hexdigest()
    store = (repo / "results" / "study" / "store.jsonl").read_bytes()

    assert migrate([str(repo / "results")]) == 0
    out = capsys.readouterr().out
    assert "store.jsonl -> store.jsonl.gz" in out and "rounds.jsonl" not in out  # small files stay as they are
    # the same tables and intervals from the compact files
    assert readme_main(["--check", str(readme), "--root", str(repo)]) == 0
    assert readme.read_text() == before

    study = repo / "results" / "study"
    run = study / "A_s0"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.csv.gz", "metrics.json", "queries.npz"]
    assert len(list(study.glob("test_set_*.json"))) == 1 and not list((repo / "results").rglob("*.npy"))
    info = json.loads((run / "metrics.json").read_text())["registry"]
    assert info["registered_by"] == "experiments.registry.migrate" and info["history"] == commit
    assert info["matrices"] == [{"file": "sim_t2v.npy", "sha256": matrix_sha, "shape": [40, 10], "dtype": "float32",
                                 "queries": "queries.npz"}]
    shown = subprocess.run(["git", "show", f"{commit}:results/study/A_s0/test/sim_t2v.npy"], cwd=repo, check=True,
                           capture_output=True).stdout
    assert hashlib.sha256(shown).hexdigest() == matrix_sha  # the full matrix, from history, byte for byte
    retest = json.loads((study / "R_retest_s0" / "metrics.json").read_text())
    assert retest["ckpt_path"] == "../A_s0/checkpoints/best.ckpt"  # made in A_s0's folder: now its registry folder
    assert gzip.decompress((study / "store.jsonl.gz").read_bytes()) == store and not (study / "store.jsonl").exists()
    only = json.loads((repo / "results" / "ablation" / "C_s1" / "metrics.json").read_text())["registry"]
    assert only["matrices"] == [] and "history" not in only and not list((repo / "results" / "ablation").rglob(
        "queries*.npz"))
    for path in (repo / "results").rglob("*"):
        if path.suffix in (".json", ".yaml"):
            assert not registry.EMBEDDED_ABSOLUTE.search(path.read_text()), path

    assert migrate([str(repo / "results")]) == 0  # nothing left to do
    assert "nothing to migrate" in capsys.readouterr().out


def test_a_changed_tree_records_no_history_commit(repo: Path) -> None:
    (repo / "results" / "study" / "note.txt").write_text("uncommitted")
    assert migrate([str(repo / "results")]) == 0
    info = json.loads((repo / "results" / "study" / "A_s0" / "metrics.json").read_text())["registry"]
    assert "history" not in info  # the matrices are not in any commit as they are here

"""The report's figures (experiments/report/plots.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from experiments.report import main as report
from experiments.report import plots
from experiments.report.plots import read_curves
from experiments.results.runs import discover, group_runs
from tests.report_helpers import _copy_run, table
from tests.run_helpers import REPO


@pytest.fixture
def runs(clip4clip_runs: Path) -> Path:
    return clip4clip_runs


def test_numeric_swept_parameter_gets_a_plot(runs: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "lr_sweep"
    shutil.copytree(runs, sweep)
    for path in sweep.rglob("test/config.yaml"):
        config = yaml.safe_load(path.read_text())
        config["model"]["init_args"]["lr"] = 1e-3 if config["model"]["init_args"]["sim_header"] == "meanP" else 1e-2
        path.write_text(yaml.safe_dump(config))
    report([str(sweep), "--out", str(tmp_path / "out"), "--no-matrices"])
    rows = table((tmp_path / "out" / "report.md").read_text(), "Sweep lr_sweep")
    assert sorted((r["sim_header"], r["lr"]) for r in rows) == [("meanP", "0.001"), ("seqTransf", "0.01")]
    assert (tmp_path / "out" / "plots" / "sweep_lr_sweep_lr.png").stat().st_size > 1000


def test_expert_usage_of_a_mixture_of_experts_run_is_plotted(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    report([str(run), "--out", str(tmp_path / "plain"), "--no-matrices"])
    assert not (tmp_path / "plain" / "plots" / "expert_usage.png").exists()  # only runs that have the file
    usage = {"videos": 4, "active": 2, "entropy_bits": 1.0, "effective_experts": 2.0,
             "experts": [{"index": i, "group": g, "selected": n, "mean_gate": 0.1}
                         for i, (g, n) in enumerate([("captions", 4), ("frames", 0), ("both", 4)])]}
    (run / "test" / "expert_usage.json").write_text(json.dumps(usage))
    report([str(run), "--out", str(tmp_path / "moe"), "--no-matrices"])
    assert (tmp_path / "moe" / "plots" / "expert_usage.png").stat().st_size > 0
    assert "plots/expert_usage.png" in (tmp_path / "moe" / "report.md").read_text()


def test_figures_of_registered_runs_and_none_without_data(tmp_path: Path) -> None:
    """The committed demo runs (registered: metrics.csv.gz, queries.npz) give curves and rank histograms; a run
    without a training log or expert usage gives no figure rather than an empty one."""
    groups = group_runs(discover([str(REPO / "results" / "demo")])[0])
    curves = read_curves(groups[0].runs[0])
    assert curves and all(len(points) > 0 for points in curves.values())
    for png in (plots.training_curves(groups), plots.rank_histograms(groups)):
        assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert plots.expert_usage_histograms(groups) is None  # CLIP4Clip has no experts
    bare = tmp_path / "bare"
    shutil.copytree(REPO / "results" / "demo" / "clip4clip_meanP", bare / "clip4clip_meanP")
    shutil.copy(REPO / "results" / "demo" / json.loads((bare / "clip4clip_meanP" / "metrics.json").read_text())[
        "registry"]["test_set"], bare)
    (bare / "clip4clip_meanP" / "metrics.csv.gz").unlink()
    assert plots.training_curves(group_runs(discover([str(bare)])[0])) is None
    assert plots.sweep_plots(groups, ["model.init_args.sim_header"]) == []  # a text parameter: no line plot

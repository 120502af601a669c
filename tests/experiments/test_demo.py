"""experiments.demo: the check of a run's metrics against its artifacts, and the loggers each demo run gets. The demo's
report step on the demo's layout runs in tests/experiments/test_report.py; ``make demo`` itself in the slow suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments import demo
from lightning_modules.metrics import retrieval_metrics


def _test_dir(root: Path, sim: np.ndarray, gt: list[int], metrics: dict[str, float]) -> Path:
    root.mkdir(parents=True)
    np.save(root / "sim_t2v.npy", sim)
    (root / "text_to_video.json").write_text(json.dumps(gt))
    (root / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    return root


def test_recompute_check_is_zero_for_honest_metrics_and_shows_a_changed_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sim, gt = rng.standard_normal((6, 4)).astype(np.float32), [0, 0, 1, 2, 3, 3]
    honest = retrieval_metrics(sim, gt)
    assert demo.recompute_check(_test_dir(tmp_path / "a", sim, gt, honest)) == 0.0
    edited = {**honest, "t2v_R1": honest["t2v_R1"] + 12.5}
    assert demo.recompute_check(_test_dir(tmp_path / "b", sim, gt, edited)) == 12.5


def test_every_demo_run_logs_to_csv_and_offline_wandb_under_one_name(tmp_path: Path) -> None:
    loggers = json.loads(demo.loggers(tmp_path, "meanP"))
    assert [lg["class_path"].rsplit(".", 1)[1] for lg in loggers] == ["CSVLogger", "WandbLogger"]
    assert {lg["init_args"]["save_dir"] for lg in loggers} == {str(tmp_path)}
    assert loggers[0]["init_args"]["name"] == loggers[1]["init_args"]["name"] == "meanP"
    assert loggers[1]["init_args"]["offline"] is True

"""experiments.care_dpo.pipeline: the settings a pipeline refuses before running a stage, the trainer setting a stage
runs with, the retrievers it trains, and its stage markers. The whole pipeline runs in tests/test_care_dpo_pipeline.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments.care_dpo.pipeline import Pipeline, PipelineError, _read_marker, _write_marker, copy_for_sweep
from tests.run_helpers import REPO

SHIPPED = yaml.safe_load((REPO / "configs" / "care_dpo" / "synthvtr.yaml").read_text())
CONFIGS = {k: str(REPO / v) for k, v in SHIPPED.items() if k.endswith("_config")}


def _pipeline(tmp_path: Path, **settings: Any) -> Pipeline:
    return Pipeline(**{**CONFIGS, "work": str(tmp_path / "work"), "out": str(tmp_path / "out"), **settings})


def test_the_shipped_configs_make_a_pipeline_with_its_default_sources_and_runs(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, seed=3, role_ablation_sources=["dgdpo"])
    assert pipeline.work == tmp_path / "work" / "seed3" and pipeline.sources == ["sft", "dgdpo"]
    assert pipeline.retriever_runs() == ["sft-role", "dgdpo-norole", "dgdpo-role"]
    assert _pipeline(tmp_path, zero_shot_captions="z.jsonl").sources == ["zero_shot", "sft", "dgdpo"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"sources": ["sft", "gold"]}, r"sources: unknown \['gold'\]"),
    ({"sources": ["zero_shot"]}, "zero_shot but zero_shot_captions is not set"),
    ({"overrides": {"evaluate": []}}, r"overrides: unknown stages \['evaluate'\]"),
    ({"sft_config": "configs/care_dpo/nowhere.yaml"}, r"sft_config: configs/care_dpo/nowhere\.yaml does not exist"),
    ({"score_config": None}, "score_config missing: every stage needs its config"),
    ({"overrides": {"sample": ["--trainer.precision", "bf16"]}},
     "sampling stage runs under precision 'bf16-mixed' but DG-DPO trains under '32-true'"),
])
def test_bad_settings_are_refused_before_any_stage_runs(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        _pipeline(tmp_path, **settings)
    assert not (tmp_path / "work").exists()


def test_a_stage_trainer_setting_is_its_configs_then_its_overrides(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, overrides={"retriever": ["--trainer.max_epochs=3"],
                                              "score": ["--trainer.precision", "bf16"]})
    assert pipeline.trainer_setting("retriever", "max_epochs") == 3
    assert pipeline.trainer_setting("score", "precision") == "bf16-mixed"  # Lightning's name for bf16
    assert pipeline.trainer_setting("sample", "precision") == "32-true"  # the config's


def test_a_torn_or_empty_marker_means_the_stage_runs_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    done = tmp_path / "stage" / "done.json"
    done.parent.mkdir()
    _write_marker(done, {"seconds": 12.5})
    assert _read_marker(done) == {"seconds": 12.5} and [p.name for p in done.parent.iterdir()] == ["done.json"]
    assert _read_marker(tmp_path / "absent.json") is None
    for torn in (b"", b'{"seconds": 1', b'{"seconds": "1"}', b"\xff"):
        done.write_bytes(torn)
        with caplog.at_level(logging.WARNING):
            assert _read_marker(done) is None
    assert "stage marker is empty or torn" in caplog.text


def test_copy_for_sweep_puts_the_headline_metrics_where_the_sweep_runner_reads_them(tmp_path: Path) -> None:
    metrics = tmp_path / "retriever" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"metrics": {"t2v_R1": 40.0}}))
    summary = {"retrieval": {"dgdpo-role": {"path": str(metrics), "t2v_R1": 40.0}}, "seed": 0}
    copy_for_sweep(summary, "dgdpo-role", tmp_path / "sweep_run")
    assert json.loads((tmp_path / "sweep_run" / "version_0" / "test" / "metrics.json").read_text()) == {
        "metrics": {"t2v_R1": 40.0}}
    assert json.loads((tmp_path / "sweep_run" / "version_0" / "summary.json").read_text()) == summary

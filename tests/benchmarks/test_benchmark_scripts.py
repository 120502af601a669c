"""The benchmark scripts run (tiny sizes): a benchmark whose README figures cannot be regenerated is broken.

Only that they run and what they write is checked; their timings are never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.run_helpers import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_train_step_covers_every_method_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "train_step.json"
    _run("-m", "benchmarks.train_step", "--steps", "1", "--batch", "4", "--captions", "3", "--json", str(out))
    record = json.loads(out.read_text())
    assert [r["method"] for r in record["rows"]] == [
        "CLIP4Clip meanP", "CLIP4Clip seqTransf", "NarVid (full)", "NarVid without CMI",
        "ExCae (ECS, routed experts)", "ExCae (ECS, all experts)", "ExCae without ECS (token mean)"]
    assert record["batch"] == 4 and "load_average_1min_before" in record


def test_eval_scoring_and_report_benchmarks_run() -> None:
    _run("-m", "benchmarks.eval_scoring", "--texts", "20", "--videos", "10", "--frames", "4", "--words", "8",
         "--dim", "16", "--chunks", "8", "--repeats", "1")
    _run("-m", "benchmarks.report", "--runs", "2", "--size", "30", "--resamples", "50")


def test_per_candidate_benchmark_runs_and_its_variants_agree(tmp_path: Path) -> None:
    out = tmp_path / "per_candidate.json"
    _run("-m", "benchmarks.per_candidate", "--texts", "12", "--videos", "9", "--dim", "8", "--chunk", "5",
         "--concat-pairs", "4", "--batch", "2", "--text-backbone", "vtr-tiny-clip", "--json", str(out))
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"sum_naive", "sum_chunked", "gate_naive", "gate_chunked", "concat_naive", "concat_chunked"}
    for fusion in ("sum", "gate"):  # the module's tiled path scores exactly what the all-at-once tensor scores
        assert abs(rows[f"{fusion}_naive"]["checksum"] - rows[f"{fusion}_chunked"]["checksum"]) < 1e-3
    assert rows["concat_chunked"]["extrapolated"] and rows["concat_chunked"]["pairs_timed"] == 4


@pytest.mark.slow  # loads SmolLM2-135M three times (converted from the GGUF wheel on first use)
def test_care_dpo_benchmark_runs_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "care_dpo.json"
    _run("-m", "benchmarks.care_dpo", "--batch", "2", "--samples", "2", "--new-tokens", "2", "--repeats", "1",
         "--json", str(out))
    record = json.loads(out.read_text())
    assert [(r["lm_layers"], r["lm_training"]) for r in record["rows"]] == [(30, "full"), (30, "lora"), (6, "full")]
    assert all(r["captions_per_s"] > 0 and r["dgdpo_step_s"] > 0 for r in record["rows"])


def test_search_vector_benchmark_runs_every_index_type(tmp_path: Path) -> None:
    out = tmp_path / "search_vectors.json"
    _run("-m", "benchmarks.search", "--part", "vectors", "--sizes", "3000", "--cluster-size", "50", "--queries", "10",
         "--nprobe", "4", "8", "--ef-search", "16", "--threads", "1", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["index"].split()[0] for r in rows] == ["flat", "ivf", "ivf", "hnsw"]
    assert rows[0]["recall_at_10"] == 1.0 and all(0.0 <= r["recall_at_10"] <= 1.0 for r in rows)

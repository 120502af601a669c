"""The benchmark scripts run (tiny sizes): a benchmark whose README figures cannot be regenerated is broken.

Every mode each script offers runs here (``python -m benchmarks.search --part indexing`` needs a trained checkpoint
and runs in ``tests/experiments/test_search.py::test_indexing_benchmark_runs``). Only that they run and what they
write is checked; their timings are never asserted.
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
    # --narvid adds NarVid's two views to the default variants: both modes in one run
    out = _run("-m", "benchmarks.eval_scoring", "--texts", "20", "--videos", "10", "--frames", "4", "--words", "8",
               "--dim", "16", "--chunks", "8", "--repeats", "1", "--narvid")
    table = [line.split(" | ")[:2] for line in out.splitlines() if line.startswith("| ")][1:]
    assert table == [["| coarse", "naive"], ["| coarse", "chunked"], ["| fine", "naive"], ["| fine", "chunked"],
                     ["| narvid", "per-query loop"], ["| narvid", "chunked"]]
    _run("-m", "benchmarks.report", "--runs", "2", "--size", "30", "--resamples", "50")


def _machine_fields(record: dict) -> None:
    assert record["machine_state"] in ("idle", "shared") and "load_average_1min_before" in record
    assert record["cpus"] >= 1 and record["device"] == "cpu"


def test_narvid_eval_benchmark_scores_the_same_matrix_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "narvid_eval.json"
    _run("-m", "benchmarks.narvid_eval", "--texts", "24", "--videos", "10", "--frames", "4", "--words", "12",
         "--query-tokens", "5", "--backbone", "vtr-tiny-clip", "--temporal-layers", "1", "--text-chunk", "8",
         "--video-chunk", "6", "--repeats", "2", "--json", str(out), "--machine-state", "shared")
    record = json.loads(out.read_text())
    assert record["bitwise_identical"] and record["metrics_identical"] and record["queries_same_ranking"] == 24
    assert [r["way"].split(" (")[0].split(":")[0] for r in record["rows"]] == [
        "every word slot", "packed queries", "GEMM floor", "GEMM floor"]
    assert record["rows"][0]["checksum"] == record["rows"][1]["checksum"]
    assert record["real_word_slots"] < 24 * 12 and record["machine_state"] == "shared"
    _machine_fields(record)


def test_excae_eval_benchmark_runs_every_way(tmp_path: Path) -> None:
    out = tmp_path / "excae_eval.json"
    _run("-m", "benchmarks.excae_eval", "--videos", "12", "--texts", "12", "--captions", "3", "--frames", "4",
         "--batch", "5", "--backbone", "vtr-tiny-clip", "--experts", "6", "--expert-heads", "2", "--expert-ffn", "16",
         "--repeats", "1", "--json", str(out))
    record = json.loads(out.read_text())
    rows = {r["way"]: r for r in record["rows"]}
    assert len(rows) == 4 and all(r["topk_max_abs_diff"] <= 1e-5 for r in rows.values())
    assert [r["views"] for r in record["rows"]] == ["topk", "topk", "dense + topk", "topk"]
    _machine_fields(record)


def test_decode_benchmark_runs_every_reader_and_source(tmp_path: Path) -> None:
    out = _run("-m", "benchmarks.decode", "--data", str(tmp_path / "clips"), "--clips", "2", "--seconds", "1", "--fps",
               "4", "--workers", "0", "--passes", "1", "--num-frames", "2", "--image-size", "32")
    lines = out.splitlines()
    table = lines[lines.index("| reader | source | workers | clips/s (best) | clips/s (mean) |") + 2:]
    rows = [line.split(" | ")[:2] for line in table if line.startswith("| ")]
    assert rows == [["| decord", "original"], ["| pyav", "original"], ["| decord", "3fps-224"],
                    ["| pyav", "3fps-224"], ["| frames", "frames"]]


@pytest.mark.slow  # three fits of the quickstart config through the CLI (~40 s of CPU at 6 families)
def test_feature_cache_benchmark_runs_every_mode(tmp_path: Path) -> None:
    out = _run("-m", "benchmarks.feature_cache", "--data", str(tmp_path / "synthvtr"), "--families", "6",
               "--epochs", "1", "--workers", "0")
    assert [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| ")][1:] == [
        "| end-to-end", "| cached-cold", "| cached-warm"]


@pytest.mark.slow  # two fits and a test of the quickstart config through the CLI
def test_precision_benchmark_runs_both_precisions_and_the_retest(tmp_path: Path) -> None:
    out = tmp_path / "precision"
    _run("-m", "benchmarks.precision", "--out", str(out), "--", "--data.init_args.root", str(tmp_path / "synthvtr"),
         "--data.init_args.num_families", "6", "--data.init_args.test_families", "2",
         "--data.init_args.val_families", "2", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1")
    summary = json.loads((out / "summary.json").read_text())
    assert {"fp32", "bf16", "bf16_retest_fp32"} <= set(summary) and "bf16_minus_retest_t2v_R1" in summary


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

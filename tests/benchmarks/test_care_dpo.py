"""benchmarks.care_dpo runs every variant (full LM, LoRA, truncated LM).

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_helpers import run_benchmark


@pytest.mark.slow  # loads SmolLM2-135M three times (converted from the GGUF wheel on first use)
def test_care_dpo_benchmark_runs_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "care_dpo.json"
    run_benchmark("-m", "benchmarks.care_dpo", "--batch", "2", "--samples", "2", "--new-tokens", "2", "--repeats", "1",
         "--json", str(out))
    record = json.loads(out.read_text())
    assert [(r["lm_layers"], r["lm_training"]) for r in record["rows"]] == [(30, "full"), (30, "lora"), (6, "full")]
    assert all(r["captions_per_s"] > 0 and r["dgdpo_step_s"] > 0 for r in record["rows"])

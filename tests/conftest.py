"""Shared fixtures: offline environment and fake datasets in the real public file layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from datamodules.readers import sample_frame_indices

# the generators live in experiments/tiny_inputs.py (commands that run pipelines on generated data use them too)
from experiments.tiny_inputs import COLOURS, make_fake_msrvtt, write_video  # noqa: F401  (re-exported)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property-based tests (hypothesis: the loaders, the importer, the caption store, the JSONL repair). `make test` runs
# the "vtr" profile: a fixed budget of HYPOTHESIS_EXAMPLES generated inputs per property, derandomized (the same
# inputs on every run and machine, so CI never fails at random) and without the example database (nothing written
# into the checkout). VTR_HYPOTHESIS_PROFILE=explore draws fresh random inputs, 10x as many, to hunt for new failures.
HYPOTHESIS_EXAMPLES = 50
_PROFILE = {"deadline": None, "database": None, "print_blob": True,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("vtr", max_examples=HYPOTHESIS_EXAMPLES, derandomize=True, **_PROFILE)
settings.register_profile("explore", max_examples=10 * HYPOTHESIS_EXAMPLES, derandomize=False, **_PROFILE)
settings.load_profile(os.environ.get("VTR_HYPOTHESIS_PROFILE", "vtr"))


@pytest.fixture(scope="session")
def fake_msrvtt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_msrvtt(tmp_path_factory.mktemp("msrvtt"))


@pytest.fixture(scope="session")
def narrated_msrvtt(fake_msrvtt: Path) -> Path:
    """Narration aligned with the 4 uniformly sampled frames of each 16-frame fake video."""
    data = json.loads((fake_msrvtt / "MSRVTT_data.json").read_text())
    frames = sample_frame_indices(16, 4, "uniform").tolist()
    lines = []
    for video in data["videos"]:
        colour = next(s["caption"].split()[1] for s in data["sentences"] if s["video_id"] == video["video_id"])
        lines.append(json.dumps({"video_id": video["video_id"], "kind": "narration", "prompt": "describe",
                                 "captions": [f"a {colour} square at frame {f}" for f in frames],
                                 "frame_indices": frames, "model": "test", "created": "2026-11-22T00:00:00"}))
    path = fake_msrvtt / "captions" / "narration_test.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return fake_msrvtt

"""NarVid through the CLI on fake MSR-VTT with a narration store: live and cached caption encoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightning_modules.metrics import retrieval_metrics
from main import main
from tests.run_helpers import narvid_args


@pytest.mark.parametrize("cached", [False, True])
def test_narvid_fit_test_with_narration(narrated_msrvtt: Path, tmp_path: Path, cached: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    args = narvid_args(narrated_msrvtt, tmp_path, "narvid")
    if cached:
        args += ["--data.init_args.feature_cache", "true", "--data.init_args.cache_dir", str(tmp_path / "cache")]
        from lightning_modules.backbones.base import VideoTextBackbone

        def no_live_text(*_: object) -> None:
            raise AssertionError("with a frozen cached text trunk, queries and narration must come from the cache")

        monkeypatch.setattr(VideoTextBackbone, "encode_text", no_live_text)
    cli = main(args)
    test_dir = Path(cli.trainer.log_dir) / "test"
    record = json.loads((test_dir / "metrics.json").read_text())
    assert record["num_texts"] == 6 and record["num_videos"] == 6
    assert {"video/t2v_R1", "narration/t2v_R1"} <= set(record["metrics"])
    sim = np.load(test_dir / "sim_t2v.npy")
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    assert abs(retrieval_metrics(sim, gt)["t2v_R1"] - record["metrics"]["t2v_R1"]) < 1e-4
    views = {v: np.load(test_dir / f"sim_t2v_{v}.npy") for v in ("video", "narration")}
    z = sum((m - m.mean()) / m.std() for m in views.values())
    np.testing.assert_allclose(sim, z, rtol=1e-4, atol=1e-4)  # Eq. 11 recomputed from the saved raw views
    if cached:
        assert record["data"]["feature_cache"]["text"]

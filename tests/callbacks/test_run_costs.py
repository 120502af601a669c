"""``RunCosts``: parameters, training step times and the 1,000-video gallery timing, measured inside a real fit + test
(the tiny CLIP4Clip on the fake MSR-VTT), and the gallery's tiling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from callbacks.run_costs import RunCosts, tile_rows
from main import main
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger


def test_tile_rows_repeats_the_videos_in_order() -> None:
    feats = {"video": torch.arange(3).float()[:, None].repeat(1, 2), "mask": torch.tensor([[1], [0], [1]])}
    tiled = tile_rows(feats, 7)
    assert tiled["video"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tiled["mask"][:, 0].tolist() == [1, 0, 1, 1, 0, 1, 1]
    with pytest.raises(ValueError, match="different row counts"):
        tile_rows({"a": torch.zeros(3, 1), "b": torch.zeros(2, 1)}, 5)
    with pytest.raises(ValueError, match="at least 1"):
        RunCosts(gallery_size=0)


def test_a_fit_and_its_test_record_their_costs(fake_msrvtt: Path, tmp_path: Path) -> None:
    cli = main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                "--trainer.max_epochs", "2", "--trainer.logger", csv_logger(tmp_path, "costs"),
                "--trainer.callbacks+=" + json.dumps({"class_path": "callbacks.run_costs.RunCosts",
                                                      "init_args": {"gallery_size": 10}})])
    run = Path(cli.trainer.log_dir)
    costs = json.loads((run / "run_costs.json").read_text())
    module = cli.model
    assert costs["trainable_params"] == sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert costs["total_params"] == sum(p.numel() for p in module.parameters()) >= costs["trainable_params"]
    # every training batch of both epochs was timed
    assert costs["train_steps"] == 2 * cli.trainer.num_training_batches
    assert costs["step_ms_median"] > 0 and costs["interval_ms_median"] > 0
    gallery = costs["eval_gallery"]
    record = json.loads((run / "test" / "metrics.json").read_text())
    assert gallery["gallery_videos"] == 10 and gallery["queries"] == record["num_texts"]
    assert gallery["test_videos"] == record["num_videos"] == 6
    # both are rounded to 4 decimals: seconds' rounding (up to 5e-5 s) moves the per-query figure by 5e-5 / queries s
    rounding_ms = 0.5e-4 / gallery["queries"] * 1000 + 0.5e-4
    assert gallery["seconds"] > 0 and gallery["ms_per_query"] == pytest.approx(
        gallery["seconds"] / gallery["queries"] * 1000, rel=1e-3, abs=rounding_ms)
    # the test itself is untouched: its metrics agree with its saved matrix
    from tests.run_helpers import assert_metrics_match_artifacts

    assert_metrics_match_artifacts(run / "test")

"""Two CPU processes (gloo): the gathered loss and gradients equal the single-process global batch, and
evaluation de-duplicates DistributedSampler padding to the split's exact counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_fake_msrvtt
from tests.ddp_helpers import run_one_step

pytestmark = pytest.mark.slow


def test_ddp_loss_and_gradients_match_single_process(tmp_path: Path) -> None:
    run_one_step(str(tmp_path), devices=1)
    run_one_step(str(tmp_path), devices=2)
    single = torch.load(tmp_path / "rank0_ws1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}_ws2.pt") for r in range(2)]
    for rank in ranks:
        assert rank["loss"].item() == pytest.approx(single["loss"].item(), abs=1e-5)
        assert rank["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_evaluation_counts_are_exact(tmp_path: Path) -> None:
    from main import main

    root = make_fake_msrvtt(tmp_path / "data", num_train=8, num_test=5)  # 5 is odd: the sampler pads
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp_path / "runs"), "name": "ddp"}}])
    conf = Path(__file__).parent / "conf" / "clip4clip_tiny.yaml"
    main(["fit", "--config", str(conf), "--data.init_args.root", str(root), "--trainer.devices", "2",
          "--trainer.strategy", "ddp_spawn", "--trainer.max_epochs", "1", "--data.init_args.test_protocol",
          "all_captions", "--trainer.logger", logger])
    record = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert record["num_texts"] == 15 and record["num_videos"] == 5 and record["complete"]
    assert record["world_size"] == 2
